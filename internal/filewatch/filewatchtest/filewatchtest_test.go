package filewatchtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// layout describes dir as the kubelet leaves it: the ..data target, the
// timestamped directories, and where each visible name points.
func layout(t *testing.T, dir string) (data string, tsDirs []string, visible map[string]string) {
	t.Helper()
	data, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	visible = map[string]string{}
	for _, e := range entries {
		switch name := e.Name(); {
		case name == "..data":
		case strings.HasPrefix(name, "..2"):
			tsDirs = append(tsDirs, name)
		case strings.HasPrefix(name, "."):
			t.Errorf("leftover %s", name)
		default:
			target, err := os.Readlink(filepath.Join(dir, name))
			if err != nil {
				t.Errorf("visible %s is not a symlink: %v", name, err)
			}
			visible[name] = target
		}
	}
	return data, tsDirs, visible
}

func TestSwapSecretDirLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secret")
	WriteSecretDir(t, dir, map[string][]byte{"a": []byte("one"), "b": []byte("two")})
	data, ts, vis := layout(t, dir)
	if len(ts) != 1 || data != ts[0] {
		t.Fatalf("..data -> %s, timestamp dirs %v", data, ts)
	}
	if vis["a"] != "..data/a" || vis["b"] != "..data/b" || len(vis) != 2 {
		t.Errorf("visible links %v", vis)
	}

	before := time.Now()
	switched := SwapSecretDir(t, dir, map[string][]byte{"b": []byte("TWO"), "c": []byte("three")})
	if switched.Before(before) || switched.After(time.Now()) {
		t.Errorf("switch time %v outside the call", switched)
	}
	data2, ts2, vis2 := layout(t, dir)
	if len(ts2) != 1 || data2 != ts2[0] || data2 == data {
		t.Fatalf("after swap ..data -> %s (was %s), timestamp dirs %v", data2, data, ts2)
	}
	if _, gone := vis2["a"]; gone || vis2["b"] != "..data/b" || vis2["c"] != "..data/c" {
		t.Errorf("visible links after swap %v", vis2)
	}
	for name, want := range map[string]string{"b": "TWO", "c": "three"} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
			t.Errorf("%s = %q, %v", name, got, err)
		}
	}
}
