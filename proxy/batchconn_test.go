package proxy

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// recordingConn records each Write, as the system calls the proxy makes.
type recordingConn struct {
	net.Conn
	mu        sync.Mutex
	writes    [][]byte
	deadlines int
	fail      error
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return 0, c.fail
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *recordingConn) SetWriteDeadline(time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadlines++
	return nil
}

func TestBatchConnSendsABatchInOneWrite(t *testing.T) {
	t.Parallel()
	rc := &recordingConn{}
	c := &batchConn{Conn: rc}
	if _, err := c.Write([]byte("unbatched")); err != nil {
		t.Fatal(err)
	}
	c.startBatch()
	for _, s := range []string{"one", "two", "three"} {
		_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.batched(); got != len("onetwothree") {
		t.Fatalf("batched %d bytes, want %d", got, len("onetwothree"))
	}
	if len(rc.writes) != 1 {
		t.Fatalf("%d writes reached the socket before the flush, want 1 (the unbatched one)", len(rc.writes))
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	want := []string{"unbatched", "onetwothree"}
	if len(rc.writes) != len(want) {
		t.Fatalf("writes %q, want %q", rc.writes, want)
	}
	for i, w := range want {
		if string(rc.writes[i]) != w {
			t.Fatalf("write %d = %q, want %q", i, rc.writes[i], w)
		}
	}
	// The three frames' deadlines, all about a minute away, arm the
	// socket once.
	if rc.deadlines != 1 {
		t.Fatalf("socket deadline set %d times, want 1", rc.deadlines)
	}
	if err := c.flush(); err != nil || len(rc.writes) != 2 {
		t.Fatalf("flush without a batch: %v, %d writes", err, len(rc.writes))
	}
}

func TestBatchConnFailureIsFinal(t *testing.T) {
	t.Parallel()
	boom := errors.New("connection reset")
	rc := &recordingConn{fail: boom}
	c := &batchConn{Conn: rc}
	c.startBatch()
	if _, err := c.Write([]byte("frame")); err != nil {
		t.Fatalf("a batched write fails only at the flush: %v", err)
	}
	if err := c.flush(); !errors.Is(err, boom) {
		t.Fatalf("flush: %v, want %v", err, boom)
	}
	rc.fail = nil
	// Half a frame may have reached the client: nothing may follow it.
	if _, err := c.Write([]byte("close frame")); !errors.Is(err, boom) {
		t.Fatalf("write after a failed flush: %v, want %v", err, boom)
	}
	if len(rc.writes) != 0 {
		t.Fatalf("%d writes after the failure reached the socket", len(rc.writes))
	}
}

func TestRearm(t *testing.T) {
	t.Parallel()
	now := time.Now()
	in := func(d time.Duration) time.Time { return now.Add(d) }
	for _, c := range []struct {
		name        string
		armed, want time.Time
		shouldRearm bool
	}{
		{"first deadline", time.Time{}, in(time.Minute), true},
		{"cleared", in(time.Minute), time.Time{}, true},
		{"still none", time.Time{}, time.Time{}, false},
		{"tighter", in(time.Minute), in(5 * time.Second), true},
		{"a little later", in(time.Minute), in(time.Minute + time.Second), false},
		{"much later", in(time.Minute), in(2 * time.Minute), true},
		{"armed one already past", in(-time.Second), in(time.Minute), true},
	} {
		if got := rearm(c.armed, c.want); got != c.shouldRearm {
			t.Errorf("%s: rearm = %v, want %v", c.name, got, c.shouldRearm)
		}
	}
}
