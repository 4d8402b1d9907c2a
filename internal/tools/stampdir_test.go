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

func TestOpenSchemaDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache", "schemas")
	tmpl, unlock, err := openSchemaDir(t.Context(), dir, "rev 1")
	if err != nil || unlock == nil {
		t.Fatalf("empty cache: unlock %v, err %v; want the lock", unlock != nil, err)
	}
	if want := filepath.Join(dir, "{{ .ResourceKind }}{{ .KindSuffix }}.json"); tmpl != want {
		t.Errorf("template %q, want %q", tmpl, want)
	}
	if err := replaceStamped(dir, "rev 1", func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	unlock()
	if _, unlock, err := openSchemaDir(t.Context(), dir, "rev 1"); err != nil || unlock != nil {
		t.Errorf("current cache: unlock %v, err %v; want neither", unlock != nil, err)
	}
	_, unlock, err = openSchemaDir(t.Context(), dir, "rev 2")
	if err != nil || unlock == nil {
		t.Fatalf("stale cache: unlock %v, err %v; want the lock", unlock != nil, err)
	}
	unlock()
}
