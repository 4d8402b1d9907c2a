package filewatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testlog"
)

// fileLoader loads the file "value" of dir: its content is the value, and
// content starting with "bad" is an error that keeps the value in use.
type fileLoader struct {
	dir    string
	events []string // what the On* callbacks saw, in order
}

func (l *fileLoader) load(cur string) (string, string, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, "value"))
	if err != nil {
		return cur, cur, err
	}
	if s := string(b); strings.HasPrefix(s, "bad") {
		return cur, cur, errors.New(s)
	}
	return string(b), string(b), nil
}

func (l *fileLoader) options() ReloaderOptions[string] {
	return ReloaderOptions[string]{
		Dirs:      []string{l.dir},
		Poll:      time.Hour,
		Logger:    (&testlog.Buffer{}).Logger(),
		Load:      l.load,
		OnLoad:    func(v string) { l.events = append(l.events, "load "+v) },
		OnError:   func(err error) { l.events = append(l.events, "error "+err.Error()) },
		OnRecover: func() { l.events = append(l.events, "recover") },
	}
}

func write(t *testing.T, dir, content string) {
	t.Helper()
	filewatchtest.SwapSecretDir(t, dir, map[string][]byte{"value": []byte(content)})
}

// Each state is reported once, however often it is loaded; an error keeps
// the last good value; the counters count what they say.
func TestReloaderStateMachine(t *testing.T) {
	l := &fileLoader{dir: t.TempDir()}
	write(t, l.dir, "one")
	r, err := NewReloader(l.options())
	if err != nil {
		t.Fatal(err)
	}
	step := func(content string, loads int) {
		t.Helper()
		if content != "" {
			write(t, l.dir, content)
		}
		for range loads {
			_ = r.Reload()
		}
	}
	step("", 2)      // unchanged
	step("bad-1", 3) // an error, three times
	step("bad-2", 1) // another error
	step("one", 2)   // back, unchanged: recovered
	step("two", 2)   // a new value
	step("bad-1", 1) // the first error again: a new state
	step("two", 1)   // recovered to the same value

	want := "load one|error bad-1|error bad-2|recover|load two|error bad-1|recover"
	if got := strings.Join(l.events, "|"); got != want {
		t.Errorf("events\n got %s\nwant %s", got, want)
	}
	if r.Value() != "two" {
		t.Errorf("value %q, want two", r.Value())
	}
	if r.Changes() != 2 || r.Loads() != 13 || r.Errors() != 5 {
		t.Errorf("changes=%d loads=%d errors=%d, want 2, 13, 5", r.Changes(), r.Loads(), r.Errors())
	}
}

// A value is published with an error too, when the loader says it changed
// (the keyring ages keys it keeps while the directory is broken).
func TestReloaderPublishesValueWithError(t *testing.T) {
	n := 0
	var errs []string
	r, err := NewReloader(ReloaderOptions[int]{
		Dirs: []string{t.TempDir()},
		Load: func(cur int) (int, string, error) {
			n++
			return n, fmt.Sprint(n), errors.New("still broken")
		},
		OnError: func(err error) { errs = append(errs, err.Error()) },
		OnLoad:  func(int) { t.Error("OnLoad called for a load with an error") },
	})
	if err != nil {
		t.Fatal(err)
	}
	ch := r.Changed()
	if err := r.Reload(); err == nil {
		t.Error("Reload hid the load's error")
	}
	select {
	case <-ch:
	default:
		t.Error("Changed not closed by a change that came with an error")
	}
	if r.Value() != 2 || r.Changes() != 2 || len(errs) != 1 {
		t.Errorf("value=%d changes=%d errors logged=%v", r.Value(), r.Changes(), errs)
	}
}

func TestReloaderRequiredFirstLoad(t *testing.T) {
	l := &fileLoader{dir: filepath.Join(t.TempDir(), "missing")}
	opts := l.options()
	opts.Required = true
	if _, err := NewReloader(opts); err == nil {
		t.Fatal("a required first load that failed was accepted")
	}
	if len(l.events) != 0 {
		t.Errorf("a failed required first load was reported: %v", l.events)
	}
	opts.Required = false
	r, err := NewReloader(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.events) != 1 || !strings.HasPrefix(l.events[0], "error ") || r.Changes() != 0 {
		t.Errorf("events %v, changes %d", l.events, r.Changes())
	}
}

func TestReloaderInvalidOptions(t *testing.T) {
	load := func(string) (string, string, error) { return "", "", nil }
	for name, opts := range map[string]ReloaderOptions[string]{
		"no load":       {Dirs: []string{t.TempDir()}},
		"no dirs":       {Load: load},
		"negative poll": {Dirs: []string{t.TempDir()}, Load: load, Poll: -1},
	} {
		if _, err := NewReloader(opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Run follows the directory, and refuses to run twice at once.
func TestReloaderRun(t *testing.T) {
	l := &fileLoader{dir: t.TempDir()}
	write(t, l.dir, "one")
	opts := l.options()
	opts.OnLoad = nil // called from Run's goroutine: l.events is not for that
	opts.OnError, opts.OnRecover = nil, nil
	r, err := NewReloader(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	}()
	select {
	case <-r.Started():
	case <-time.After(within):
		t.Fatal("Run did not start")
	}
	if err := r.Run(context.Background()); err == nil {
		t.Error("second Run accepted")
	}
	ch := r.Changed()
	write(t, l.dir, "two") // the poll is an hour: only the watch can see this
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatal("no change within the bound after a swap")
	}
	if r.Value() != "two" {
		t.Errorf("value %q", r.Value())
	}
}
