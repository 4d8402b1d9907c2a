package tools

import (
	"os"
	"path/filepath"
)

// replaceStamped fills a fresh sibling of dir, stamps it with stamp (what
// it was generated from) and puts it in dir's place, so a reader never sees
// a half-written directory.
func replaceStamped(dir, stamp string, fill func(tmp string) error) error {
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := fill(tmp); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, ".stamp"), []byte(stamp), 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}
