package proxy

import (
	"sync"

	"k8s.io/client-go/tools/remotecommand"
)

// sizeQueue hands terminal sizes to the exec. It holds only the latest size
// not yet taken: a resize that arrives before the exec is up is kept (the
// initial size must not be lost, kubernetes#47990), and a burst of resizes
// while the exec is busy collapses to the last one, which is all a terminal
// needs.
type sizeQueue struct {
	mu      sync.Mutex
	pending *remotecommand.TerminalSize
	signal  chan struct{} // capacity 1: "pending changed"
	done    chan struct{}
	once    sync.Once
}

func newSizeQueue() *sizeQueue {
	return &sizeQueue{signal: make(chan struct{}, 1), done: make(chan struct{})}
}

// Set replaces the pending size.
func (q *sizeQueue) Set(s TerminalSize) {
	q.mu.Lock()
	q.pending = &s
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// Next blocks until a size is pending or the queue is closed (then nil).
// It implements remotecommand.TerminalSizeQueue.
func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	for {
		q.mu.Lock()
		s := q.pending
		q.pending = nil
		q.mu.Unlock()
		if s != nil {
			return s
		}
		select {
		case <-q.signal:
		case <-q.done:
			return nil
		}
	}
}

// Close ends Next; the exec's resize goroutine exits with it.
func (q *sizeQueue) Close() { q.once.Do(func() { close(q.done) }) }
