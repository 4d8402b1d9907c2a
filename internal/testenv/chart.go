package testenv

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// CopyChart copies the chart at src (without its Go tests) to a temporary
// directory, passing each file's bytes through edit (rel is slash-separated,
// relative to src), and returns the copy's path.
func CopyChart(tb testing.TB, src string, edit func(rel string, data []byte) ([]byte, error)) string {
	tb.Helper()
	dst := filepath.Join(tb.TempDir(), "k8s-ws-proxy") // helm lint wants the chart's name
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			if rel == "tests" {
				return filepath.SkipDir // Go tests, not part of the chart
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(path)
		if err == nil {
			data, err = edit(filepath.ToSlash(rel), data)
		}
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		tb.Fatal(err)
	}
	return dst
}
