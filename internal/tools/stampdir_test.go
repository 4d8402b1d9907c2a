package tools

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReplaceStamped(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "schemas")
	write := func(name string) func(string) error {
		return func(tmp string) error { return os.WriteFile(filepath.Join(tmp, name), []byte(name), 0o644) }
	}
	if err := replaceStamped(dir, "v1", write("a.json")); err != nil {
		t.Fatal(err)
	}
	if err := replaceStamped(dir, "v2", write("b.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.json")); !os.IsNotExist(err) {
		t.Errorf("the old generation survived the replacement: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, ".stamp")); err != nil || string(b) != "v2" {
		t.Errorf("stamp %q, %v; want v2", b, err)
	}
	// A failed fill leaves the previous generation and no temporary behind.
	if err := replaceStamped(dir, "v3", func(string) error { return errors.New("boom") }); err == nil {
		t.Fatal("a failed fill reported success")
	}
	if b, err := os.ReadFile(filepath.Join(dir, ".stamp")); err != nil || string(b) != "v2" {
		t.Errorf("after a failed fill: stamp %q, %v; want v2", b, err)
	}
	if left, _ := os.ReadDir(parent); len(left) != 1 {
		t.Errorf("%d entries next to the directory, want only it", len(left))
	}
}
