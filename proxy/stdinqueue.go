package proxy

import (
	"context"
	"io"
	"sync"
	"time"
)

// minStdinBuffer is the least stdin the proxy holds for a process that is
// not reading; the limit is at least one whole inbound message.
const minStdinBuffer = 1 << 20

// stdinQueue carries the client's stdin to the exec. The read loop pushes
// whole messages without waiting on the process, up to limit bytes; past
// that it waits, so the client's TCP window closes and memory stays
// bounded. It never waits on a lock a stalled writer holds: the session's
// end (Close, or ctx) releases it at once.
type stdinQueue struct {
	mu     sync.Mutex
	chunks [][]byte
	size   int
	limit  int
	eof    bool  // the client half-closed stdin
	pushed int64 // payload bytes ever queued (a resume's stdin offset)
	closed bool  // the session is over
	// While PushTo runs, push writes a message to direct itself when
	// nothing is queued or being written (busy keeps the order): no
	// hand-off to the exec's goroutine for a keystroke.
	direct io.Writer
	busy   bool  // a write to the exec is in flight
	failed error // that write failed: the exec's stdin is gone

	readable chan struct{} // capacity 1: data, EOF or close
	space    chan struct{} // capacity 1: room was made
	done     chan struct{} // closed by Close
	once     sync.Once
	taken    func(n int) // called for what the exec reads
}

func newStdinQueue(limit int, taken func(int)) *stdinQueue {
	return &stdinQueue{limit: max(limit, minStdinBuffer), taken: taken,
		readable: make(chan struct{}, 1), space: make(chan struct{}, 1), done: make(chan struct{})}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// push queues p (which it keeps) and reports whether it had to wait for
// room. It fails once the session is over or stdin was closed.
func (q *stdinQueue) push(ctx context.Context, p []byte) (waited bool, err error) {
	for {
		q.mu.Lock()
		switch {
		case q.closed || q.eof || q.failed != nil:
			q.mu.Unlock()
			return waited, io.ErrClosedPipe
		case q.direct != nil && q.size == 0 && !q.busy:
			return q.writeDirectLocked(p)
		case q.size == 0 || q.size+len(p) <= q.limit:
			q.chunks = append(q.chunks, p)
			q.size += len(p)
			q.pushed += int64(len(p))
			q.mu.Unlock()
			signal(q.readable)
			return waited, nil
		}
		q.mu.Unlock()
		waited = true
		select {
		case <-q.space:
		case <-q.done:
		case <-ctx.Done():
			return waited, ctx.Err()
		}
	}
}

// slowWrite is how long a direct write may take before push reports that
// it waited (the read loop then re-arms the client's read deadline).
const slowWrite = time.Millisecond

// writeDirectLocked is push's write to the exec itself; it unlocks q.
// A write that blocks (the process does not read, TCP is full) holds the
// read loop as a full queue does, and the session's end breaks it: the
// exec's connections are reset.
func (q *stdinQueue) writeDirectLocked(p []byte) (waited bool, err error) {
	w := q.direct
	q.busy = true
	q.pushed += int64(len(p))
	q.mu.Unlock()
	if q.taken != nil {
		q.taken(len(p))
	}
	start := time.Now()
	_, err = w.Write(p)
	waited = time.Since(start) > slowWrite
	q.mu.Lock()
	q.busy = false
	if err != nil {
		q.failed = err
	}
	// PushTo waits for this write to end only with something queued
	// behind it; waking it for nothing would cost the hand-off saved.
	wake := q.size > 0 || err != nil
	q.mu.Unlock()
	if wake {
		signal(q.readable)
	}
	return waited, err
}

// closeWrite is the client's half-close: the exec reads what is queued,
// then EOF.
func (q *stdinQueue) closeWrite() {
	q.mu.Lock()
	q.eof = true
	q.mu.Unlock()
	signal(q.readable)
}

// Close ends the queue: Read returns EOF at once, what is queued is
// dropped (the exec is gone).
func (q *stdinQueue) Close() {
	q.once.Do(func() {
		q.mu.Lock()
		q.closed = true
		q.chunks, q.size = nil, 0
		q.mu.Unlock()
		close(q.done)
	})
}

// Read is the exec taking stdin.
func (q *stdinQueue) Read(p []byte) (int, error) {
	for {
		q.mu.Lock()
		switch {
		case q.closed:
			q.mu.Unlock()
			return 0, io.EOF
		case q.size > 0:
			n := 0
			for n < len(p) && len(q.chunks) > 0 {
				c := copy(p[n:], q.chunks[0])
				n += c
				if c == len(q.chunks[0]) {
					q.chunks[0] = nil
					q.chunks = q.chunks[1:]
				} else {
					q.chunks[0] = q.chunks[0][c:]
				}
			}
			q.size -= n
			q.mu.Unlock()
			signal(q.space)
			if q.taken != nil {
				q.taken(n)
			}
			return n, nil
		case q.eof:
			q.mu.Unlock()
			return 0, io.EOF
		}
		q.mu.Unlock()
		select {
		case <-q.readable:
		case <-q.done:
		}
	}
}

// maxStdinWrite is the most WriteTo hands over at once: what io.Copy's
// buffer gave Read, so no exec path meets a larger stdin write than before.
const maxStdinWrite = 32 << 10

// WriteTo is Read without a copy: each queued message goes to w as it
// is (the frame relay's stdin pump and io.Copy use it), so the exec side
// holds no copy buffer of its own. It returns nil at EOF and once the
// queue is closed, as io.Copy does after Read's io.EOF.
func (q *stdinQueue) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		q.mu.Lock()
		switch {
		case q.failed != nil:
			err := q.failed
			q.mu.Unlock()
			return total, err
		case q.closed:
			q.mu.Unlock()
			return total, nil
		case q.busy:
			// push is writing directly; what is queued goes after it.
		case q.size > 0:
			c := q.chunks[0]
			if len(c) > maxStdinWrite {
				c, q.chunks[0] = c[:maxStdinWrite], c[maxStdinWrite:]
			} else {
				q.chunks[0] = nil
				q.chunks = q.chunks[1:]
			}
			q.size -= len(c)
			q.busy = true
			q.mu.Unlock()
			signal(q.space)
			if q.taken != nil {
				q.taken(len(c))
			}
			n, err := w.Write(c)
			total += int64(n)
			q.mu.Lock()
			q.busy = false
			q.mu.Unlock()
			if err != nil {
				return total, err
			}
			continue
		case q.eof:
			q.mu.Unlock()
			return total, nil
		}
		q.mu.Unlock()
		select {
		case <-q.readable:
		case <-q.done:
		}
	}
}

// PushTo is WriteTo that also lets push write to w itself
// (exec.StdinPusher): the frame relay's stdin, whose writer is safe for
// concurrent use.
func (q *stdinQueue) PushTo(w io.Writer) error {
	q.mu.Lock()
	q.direct = w
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		q.direct = nil
		q.mu.Unlock()
	}()
	_, err := q.WriteTo(w)
	return err
}

// pushedBytes is how many payload bytes the client's connections have
// queued in all: the stdin a resuming client must not send again.
func (q *stdinQueue) pushedBytes() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pushed
}
