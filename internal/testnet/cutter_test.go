package testnet

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echo serves one echo loop per connection until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func dial(t *testing.T, r *Relay) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

// roundTrip writes p and reads it back through the echo server.
func roundTrip(c net.Conn, p []byte) error {
	wrote := make(chan error, 1)
	go func() { _, err := c.Write(p); wrote <- err }()
	got := make([]byte, len(p))
	_, err := io.ReadFull(c, got)
	if werr := <-wrote; werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(got, p) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func TestCut(t *testing.T) {
	r := NewCutter(t, echo(t))
	c := dial(t, r)
	if err := roundTrip(c, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if r.Up() != 5 {
		t.Errorf("Up = %d, want 5", r.Up())
	}
	r.Cut()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after Cut succeeded")
	}
	// New connections still go through.
	if err := roundTrip(dial(t, r), []byte("again")); err != nil {
		t.Fatal(err)
	}
}

// ResetAt cuts at a byte count, with a reset both peers see as
// ECONNRESET; connections made after still go through.
func TestResetAt(t *testing.T) {
	for _, up := range []bool{false, true} {
		r := NewCutter(t, echo(t))
		c := dial(t, r)
		fired := r.ResetAt(up, 100)
		if err := roundTrip(c, make([]byte, 64)); err != nil {
			t.Fatalf("up %v: below the mark: %v", up, err)
		}
		select {
		case <-fired:
			t.Fatalf("up %v: fired at %d up, %d down", up, r.Up(), r.Down())
		default:
		}
		_, _ = c.Write(make([]byte, 64))
		<-fired
		n, err := io.Copy(io.Discard, c)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("up %v: read after the reset: %d bytes, %v; want ECONNRESET", up, n, err)
		}
		if r.Resets() != 1 {
			t.Errorf("up %v: Resets = %d", up, r.Resets())
		}
		if err := roundTrip(dial(t, r), []byte("again")); err != nil {
			t.Fatalf("up %v: after the reset: %v", up, err)
		}
		if r.Resets() != 1 {
			t.Errorf("up %v: a fired trigger fired again: Resets = %d", up, r.Resets())
		}
	}
	// A mark already passed fires at once.
	r := NewCutter(t, echo(t))
	if err := roundTrip(dial(t, r), []byte("xy")); err != nil {
		t.Fatal(err)
	}
	<-r.ResetAt(false, 2)
}

func TestRate(t *testing.T) {
	const rate = 256 << 10
	r := NewRelay(t, echo(t), Options{Rate: rate})
	c := dial(t, r)
	start := time.Now()
	if err := roundTrip(c, make([]byte, rate)); err != nil {
		t.Fatal(err)
	}
	// A second's worth of bytes, read 32 KiB at a time at most: the pauses
	// before the last read add up to 7/8 s at least.
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Errorf("%d bytes at %d B/s took %v", rate, rate, d)
	}
	if r.Up() != rate {
		t.Errorf("Up = %d, want %d", r.Up(), rate)
	}
}

func TestIdle(t *testing.T) {
	r := NewRelay(t, echo(t), Options{Idle: 200 * time.Millisecond})
	busy, idle := dial(t, r), dial(t, r)
	if err := roundTrip(idle, []byte("x")); err != nil {
		t.Fatal(err)
	}
	// The busy connection keeps sending; the idle one is closed.
	pace := time.NewTicker(20 * time.Millisecond)
	defer pace.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for r.Dropped() == 0 && time.Now().Before(deadline) {
		if err := roundTrip(busy, []byte("y")); err != nil {
			t.Fatalf("busy connection: %v", err)
		}
		<-pace.C
	}
	if n := r.Dropped(); n != 1 {
		t.Fatalf("Dropped = %d, want 1", n)
	}
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Error("the idle connection is still open")
	}
	if err := roundTrip(busy, []byte("z")); err != nil {
		t.Errorf("busy connection after the drop: %v", err)
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p == 0 {
			t.Fatalf("ports %v: not distinct", ports)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}
}
