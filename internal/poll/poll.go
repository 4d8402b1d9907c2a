// Package poll waits, in tests and test harnesses, for state that belongs
// to something else (another process, the API server's caches) and so has
// no event to wait on. It is one wrapper over apimachinery's
// wait.PollUntilContextTimeout that remembers why the last try failed.
package poll

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Interval is For's period: short, since what it waits for is usually
// about to happen.
const Interval = 10 * time.Millisecond

// stop marks an error that ends the wait at once.
type stop struct{ err error }

func (s stop) Error() string { return s.err.Error() }
func (s stop) Unwrap() error { return s.err }

// Stop wraps err so that Until returns it at once instead of trying again
// (a process that exited will not become ready).
func Stop(err error) error { return stop{err} }

// Until calls fn at once and then every interval until it returns nil, and
// returns nil. It returns fn's error wrapped with Stop as it is, or, when
// ctx is done or timeout has passed, that with the last error fn returned.
func Until(ctx context.Context, interval, timeout time.Duration, fn func(context.Context) error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		last = fn(ctx)
		var s stop
		if errors.As(last, &s) {
			return false, s.err
		}
		return last == nil, nil
	})
	switch {
	case err == nil:
		return nil
	case last == nil || errors.Is(last, err):
		return err
	default:
		return fmt.Errorf("%w (last: %w)", err, last)
	}
}

// For fails tb unless cond holds within timeout, checked every Interval.
func For(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	errNo := errors.New("not yet")
	if err := Until(context.Background(), Interval, timeout, func(context.Context) error {
		if cond() {
			return nil
		}
		return errNo
	}); err != nil {
		tb.Fatalf("%s: not true within %v", what, timeout)
	}
}
