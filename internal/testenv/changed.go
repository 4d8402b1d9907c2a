package testenv

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// Changed tells waiters that something changed: Wait returns a channel the
// next Fire closes. Its owner's mutex guards it; the zero value is ready.
type Changed struct{ ch chan struct{} }

// Wait returns the channel the next Fire closes.
func (c *Changed) Wait() <-chan struct{} {
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

// Fire wakes every waiter.
func (c *Changed) Fire() {
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}

// WatchBuffer is an output sink tests can wait on; the zero value is ready.
type WatchBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed Changed
}

func (w *WatchBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.changed.Fire()
	return w.b.Write(p)
}

// snapshot is the output so far and a channel closed at the next Write.
func (w *WatchBuffer) snapshot() (string, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String(), w.changed.Wait()
}

func (w *WatchBuffer) String() string { s, _ := w.snapshot(); return s }

// Changes returns a channel closed at the next Write.
func (w *WatchBuffer) Changes() <-chan struct{} { _, ch := w.snapshot(); return ch }

// WaitFor waits until the output contains s.
func (w *WatchBuffer) WaitFor(tb testing.TB, s string, within time.Duration) {
	tb.Helper()
	timeout := time.After(within)
	for {
		out, ch := w.snapshot()
		if strings.Contains(out, s) {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			tb.Fatalf("output never contained %q; got %q", s, w.String())
		}
	}
}
