package poll

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	n := 0
	if err := Until(context.Background(), time.Millisecond, time.Minute, func(context.Context) error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Errorf("err %v after %d tries, want nil after 3", err, n)
	}

	err := Until(context.Background(), time.Millisecond, 20*time.Millisecond, func(context.Context) error {
		return errors.New("still starting")
	})
	if err == nil || !strings.Contains(err.Error(), "still starting") {
		t.Errorf("timeout error %v does not carry the last try's", err)
	}

	exited := errors.New("process exited")
	n = 0
	err = Until(context.Background(), time.Millisecond, time.Minute, func(context.Context) error {
		n++
		return Stop(exited)
	})
	if !errors.Is(err, exited) || n != 1 {
		t.Errorf("Stop: err %v after %d tries, want %v after 1", err, n, exited)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Until(ctx, time.Millisecond, time.Minute, func(context.Context) error { return errors.New("x") }); err == nil {
		t.Error("a cancelled context did not end the wait")
	}
}

// fakeTB records a Fatalf instead of ending the test.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = format
}

func TestFor(t *testing.T) {
	n := 0
	For(t, time.Minute, "the third try", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("%d tries", n)
	}
	f := &fakeTB{TB: t}
	For(f, 20*time.Millisecond, "never", func() bool { return false })
	if f.failed == "" {
		t.Error("For did not fail on a condition that never holds")
	}
}

func TestGone(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }() // reaps it, so it does not linger as a zombie
	pid := cmd.Process.Pid
	if !Alive(pid) {
		t.Fatal("a running sleep is not alive")
	}
	f := &fakeTB{TB: t}
	Gone(f, 50*time.Millisecond, pid)
	if f.failed == "" {
		t.Error("Gone did not fail on a live process")
	}
	<-done // Gone killed it
	Gone(t, 5*time.Second, pid)
	if Alive(pid) {
		t.Error("killed process still alive")
	}
}
