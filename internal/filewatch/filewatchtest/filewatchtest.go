// Package filewatchtest writes directories exactly the way the kubelet
// writes a Secret volume, so that tests of anything that follows a mounted
// Secret exercise the real update sequence and its inotify events.
package filewatchtest

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	dataDir    = "..data"
	dataDirTmp = "..data_tmp"
)

// WriteSecretDir populates dir (created if missing) with files as the
// kubelet's atomic writer does for a new Secret volume. It is the same
// operation as SwapSecretDir; the two names only make tests read better.
func WriteSecretDir(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	SwapSecretDir(t, dir, files)
}

// SwapSecretDir replaces the contents of the Secret volume at dir with files,
// step by step as the kubelet's AtomicWriter does:
//
//  1. write the payload into a new directory ..<timestamp>.<random>;
//  2. point a symlink ..data_tmp at it;
//  3. rename ..data_tmp over ..data (the atomic switch);
//  4. create the visible symlinks name -> ..data/name that are new;
//  5. remove the visible symlinks whose names left the payload;
//  6. remove the previous ..<timestamp> directory.
//
// It returns the moment of step 3, from which "the new key is usable"
// delays are measured.
func SwapSecretDir(t testing.TB, dir string, files map[string][]byte) time.Time {
	t.Helper()
	switched, err := swap(dir, files)
	if err != nil {
		t.Fatalf("filewatchtest: writing secret dir %s: %v", dir, err)
	}
	return switched
}

func swap(dir string, files map[string][]byte) (time.Time, error) {
	for name := range files {
		if name == "" || strings.HasPrefix(name, ".") || strings.ContainsRune(name, os.PathSeparator) {
			return time.Time{}, errors.New("invalid payload file name " + name)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return time.Time{}, err
	}
	oldTS, err := os.Readlink(filepath.Join(dir, dataDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, err
	}
	oldNames := map[string]bool{}
	if oldTS != "" {
		entries, err := os.ReadDir(filepath.Join(dir, oldTS))
		if err != nil {
			return time.Time{}, err
		}
		for _, e := range entries {
			oldNames[e.Name()] = true
		}
	}

	// 1. The kubelet names it with the UTC time and a random suffix.
	ts, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return time.Time{}, err
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return time.Time{}, err
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ts, name), content, 0o644); err != nil {
			return time.Time{}, err
		}
	}
	// 2.
	tmp := filepath.Join(dir, dataDirTmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return time.Time{}, err
	}
	// 3.
	switched := time.Now()
	if err := os.Rename(tmp, filepath.Join(dir, dataDir)); err != nil {
		return time.Time{}, err
	}
	// 4.
	for name := range files {
		visible := filepath.Join(dir, name)
		if _, err := os.Lstat(visible); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(dataDir, name), visible); err != nil {
			return time.Time{}, err
		}
	}
	// 5.
	for name := range oldNames {
		if _, keep := files[name]; !keep {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return time.Time{}, err
			}
		}
	}
	// 6.
	if oldTS != "" {
		if err := os.RemoveAll(filepath.Join(dir, oldTS)); err != nil {
			return time.Time{}, err
		}
	}
	return switched, nil
}

// Start runs run in the background, waits for started (a reloader's
// Started channel), and at cleanup cancels it and checks it returned nil.
func Start(t testing.TB, run func(context.Context) error, started <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	select {
	case <-started:
	case err := <-done:
		cancel()
		t.Fatalf("Run returned early: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
}

// WaitChange waits up to 5 s for ch, a reloader's change channel taken
// before the write, to report the change; what names the value in the
// failure.
func WaitChange(tb testing.TB, ch <-chan struct{}, what string) {
	tb.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		tb.Fatalf("no %s change within 5s", what)
	}
}
