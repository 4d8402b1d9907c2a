package filewatch

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// within is how long an inotify-driven look may take. The poll in these
// tests is an hour, so a look inside this bound came from an event.
const within = 2 * time.Second

// looks counts onChange calls and lets a test wait for the next one.
type looks struct {
	ch chan struct{}
}

// start runs Run in the background with onChange signalling on the
// returned channel (buffered, so Run never blocks on a slow test), waits
// for the first look, and stops Run at cleanup, checking it returned nil.
func start(t *testing.T, opts Options, extra func()) *looks {
	t.Helper()
	l := &looks{ch: make(chan struct{}, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, opts, func() {
			if extra != nil {
				extra()
			}
			l.ch <- struct{}{}
		})
	}()
	select {
	case <-l.ch:
	case err := <-done:
		t.Fatalf("Run returned before its first look: %v", err)
	case <-time.After(within):
		t.Fatal("no first look")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(within):
			t.Error("Run did not return after cancel")
		}
	})
	return l
}

// drain forgets looks that already happened.
func (l *looks) drain() {
	for {
		select {
		case <-l.ch:
		default:
			return
		}
	}
}

// next waits for a look caused by what the test just did.
func (l *looks) next(t *testing.T, what string) {
	t.Helper()
	select {
	case <-l.ch:
	case <-time.After(within):
		t.Fatalf("no look within %v after %s", within, what)
	}
}

func TestKubeletSwapTriggersALook(t *testing.T) {
	dir := t.TempDir()
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"tls.crt": []byte("one")})
	l := start(t, Options{Dirs: []string{dir}, Poll: time.Hour, Logger: (&testlog.Buffer{}).Logger()}, nil)
	for i := range 5 {
		l.drain()
		switched := filewatchtest.SwapSecretDir(t, dir, map[string][]byte{"tls.crt": []byte(strings.Repeat("x", i))})
		l.next(t, "a kubelet-style swap")
		t.Logf("swap %d: look %v after the ..data rename", i, time.Since(switched))
	}
}

// The first look happens only once the watches are in place: a file
// written from inside it is seen.
func TestFirstLookAfterWatchesAreInPlace(t *testing.T) {
	dir := t.TempDir()
	var once sync.Once
	l := start(t, Options{Dirs: []string{dir}, Poll: time.Hour}, func() {
		once.Do(func() {
			if err := os.WriteFile(filepath.Join(dir, "during-first-look"), nil, 0o644); err != nil {
				t.Error(err)
			}
		})
	})
	l.next(t, "a write during the first look")
}

func TestDirectoryCreatedLaterDeletedAndRecreated(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "tls")
	l := start(t, Options{Dirs: []string{dir}, Poll: time.Hour}, nil)

	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"tls.crt": []byte("one")})
	l.next(t, "the directory being created")
	for i := range 3 {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		l.next(t, "the directory being deleted")
		l.drain()
		filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"tls.crt": []byte("again")})
		l.next(t, "the directory being recreated")
		// The new directory is watched, not just its parent: a change in
		// it alone is seen.
		l.drain()
		filewatchtest.SwapSecretDir(t, dir, map[string][]byte{"tls.crt": []byte{byte(i)}})
		l.next(t, "a swap in the recreated directory")
	}
}

func TestSeveralDirectories(t *testing.T) {
	a, b := t.TempDir(), filepath.Join(t.TempDir(), "ca")
	l := start(t, Options{Dirs: []string{a, b, a}, Poll: time.Hour}, nil)
	filewatchtest.WriteSecretDir(t, b, map[string][]byte{"ca.crt": []byte("ca")})
	l.next(t, "the second directory being created")
	l.drain()
	filewatchtest.SwapSecretDir(t, a, map[string][]byte{"tls.crt": []byte("a")})
	l.next(t, "a swap in the first directory")
	l.drain()
	filewatchtest.SwapSecretDir(t, b, map[string][]byte{"ca.crt": []byte("ca2")})
	l.next(t, "a swap in the second directory")
}

func TestPollAloneLooksAgain(t *testing.T) {
	// A directory that never changes: only the poll makes looks.
	l := start(t, Options{Dirs: []string{t.TempDir()}, Poll: 10 * time.Millisecond}, nil)
	for range 3 {
		l.next(t, "a poll tick")
	}
}

func TestInvalidOptions(t *testing.T) {
	called := false
	for name, opts := range map[string]Options{
		"no dirs":       {},
		"empty dir":     {Dirs: []string{""}},
		"negative poll": {Dirs: []string{t.TempDir()}, Poll: -time.Second},
	} {
		if err := Run(context.Background(), opts, func() { called = true }); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if called {
		t.Error("onChange called for invalid options")
	}
}

// The watch mechanics, without Run's loop, so that no stray event can hide
// a missing watch. Each step waits for an event only that step produces.
func TestDirWatchFollowsRecreatedDirectory(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "keys")
	logs := &testlog.Buffer{}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	w, err := newDirWatch([]string{dir}, logs.Logger(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	w.fw = fw
	expect := func(name string, op fsnotify.Op) {
		t.Helper()
		timeout := time.After(within)
		for {
			select {
			case ev := <-fw.Events:
				if ev.Name == name && ev.Has(op) {
					if !w.relevant(ev) {
						t.Fatalf("%v not considered relevant", ev)
					}
					return
				}
			case err := <-fw.Errors:
				t.Fatal(err)
			case <-timeout:
				t.Fatalf("no %v event for %s", op, name)
			}
		}
	}
	touch := func(name string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	w.ensure() // dir missing: only the parent is watched
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	expect(dir, fsnotify.Create) // through the parent's watch
	w.ensure()
	touch("marker-1")
	expect(filepath.Join(dir, "marker-1"), fsnotify.Create)

	// Deleted and recreated between two ensure calls: the watch must move
	// to the new inode.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w.ensure()
	touch("marker-2")
	expect(filepath.Join(dir, "marker-2"), fsnotify.Create)
	if logs.String() != "" {
		t.Errorf("unexpected log:\n%s", logs)
	}
}

// The parent's watch also reports the directory's siblings; those are not
// a reason to look.
func TestRelevant(t *testing.T) {
	w, err := newDirWatch([]string{"/run/secrets/tls", "/run/secrets/ca"}, slog.Default(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"/run/secrets/tls":              true,
		"/run/secrets/tls/..data":       true,
		"/run/secrets/ca/ca.crt":        true,
		"/run/secrets/keys":             false,
		"/run/secrets/tls-old":          false,
		"/run/secrets/tls/..2026_01/x":  false,
		"/run/secrets":                  false,
		"/run/secrets/tls.crt":          false,
		"/run/secrets/catalogue/ca.crt": false,
	} {
		if got := w.relevant(fsnotify.Event{Name: name, Op: fsnotify.Create}); got != want {
			t.Errorf("relevant(%s) = %v, want %v", name, got, want)
		}
	}
	if want := []string{"/run/secrets", "/run/secrets/tls", "/run/secrets/ca"}; strings.Join(w.paths, " ") != strings.Join(want, " ") {
		t.Errorf("paths %v, want %v", w.paths, want)
	}
}
