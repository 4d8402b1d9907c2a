package testenv

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
)

// SizeQueue is a client-go TerminalSizeQueue that hands out the sizes it
// is given, in order, and ends (Next returns nil) when ctx does.
type SizeQueue struct {
	ctx   context.Context
	sizes chan remotecommand.TerminalSize
}

// NewSizeQueue returns a SizeQueue holding initial; up to eight more sizes
// can be queued with Resize before Next takes any.
func NewSizeQueue(ctx context.Context, initial ...remotecommand.TerminalSize) *SizeQueue {
	q := &SizeQueue{ctx: ctx, sizes: make(chan remotecommand.TerminalSize, len(initial)+8)}
	for _, s := range initial {
		q.sizes <- s
	}
	return q
}

// Resize queues s.
func (q *SizeQueue) Resize(s remotecommand.TerminalSize) { q.sizes <- s }

func (q *SizeQueue) Next() *remotecommand.TerminalSize {
	select {
	case s := <-q.sizes:
		return &s
	case <-q.ctx.Done():
		return nil
	}
}

// Context ends after d or with the test: it bounds a test so that a hang
// fails instead of eating the suite's timeout.
func Context(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}
