package main

import (
	"flag"
	"os"
	"strings"
	"testing"
)

// TestServeFlagsDocumented keeps docs/configuration.md in step with the
// binary: every serve flag has a row there.
func TestServeFlagsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var o serveOptions
	n := 0
	newServeFlags(&o).VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(string(doc), "| `--"+f.Name+"` |") {
			t.Errorf("flag --%s has no row in docs/configuration.md", f.Name)
		}
	})
	if n < 20 {
		t.Fatalf("only %d serve flags found; the flag set was not built", n)
	}
}
