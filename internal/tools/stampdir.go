package tools

import (
	"context"
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

// openSchemaDir returns dir's kubeconform schema template. When dir does
// not hold the generation stamped want, it also returns dir's lock, held,
// for the caller to regenerate it (replaceStamped) and then unlock.
func openSchemaDir(ctx context.Context, dir, want string) (tmpl string, unlock func(), err error) {
	tmpl = filepath.Join(dir, "{{ .ResourceKind }}{{ .KindSuffix }}.json")
	current := func() bool {
		s, err := os.ReadFile(filepath.Join(dir, ".stamp"))
		return err == nil && string(s) == want
	}
	if current() {
		return tmpl, nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", nil, err
	}
	if unlock, err = lockFile(ctx, dir+".lock"); err != nil {
		return "", nil, err
	}
	if current() {
		unlock()
		return tmpl, nil, nil
	}
	return tmpl, unlock, nil
}
