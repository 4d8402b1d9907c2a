package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
)

// The queue holds at most its limit (memory stays bounded: the read loop
// waits, and TCP holds the client back), loses nothing, keeps the order,
// and the session's end releases a waiting push at once.
func TestStdinQueueBounded(t *testing.T) {
	t.Parallel()
	var taken int
	q := newStdinQueue(0, func(n int) { taken += n })
	if q.limit != minStdinBuffer {
		t.Fatalf("limit %d", q.limit)
	}
	chunk := make([]byte, 256<<10)
	for i := range 4 {
		chunk := append([]byte(nil), chunk...)
		chunk[0] = byte(i)
		if waited, err := q.push(context.Background(), chunk); err != nil || waited {
			t.Fatalf("push %d: waited %v, %v", i, waited, err)
		}
	}
	pushed := make(chan bool, 1)
	go func() {
		waited, err := q.push(context.Background(), []byte{9})
		if err != nil {
			t.Error(err)
		}
		pushed <- waited
	}()
	select {
	case <-pushed:
		t.Fatal("a push past the limit did not wait")
	case <-time.After(100 * time.Millisecond):
	}
	buf := make([]byte, 256<<10)
	n, err := io.ReadFull(q, buf)
	if err != nil || n != len(buf) || buf[0] != 0 {
		t.Fatalf("read %d %v first byte %d", n, err, buf[0])
	}
	if !<-pushed {
		t.Fatal("push did not report that it waited")
	}
	q.closeWrite()
	rest, err := io.ReadAll(q)
	if err != nil || len(rest) != 3*256<<10+1 || rest[0] != 1 || rest[len(rest)-1] != 9 {
		t.Fatalf("rest %d bytes, %v", len(rest), err)
	}
	if taken != 4*256<<10+1 {
		t.Fatalf("taken %d", taken)
	}
	if _, err := q.push(context.Background(), []byte{1}); err == nil {
		t.Fatal("push after closeWrite succeeded")
	}
}

func TestStdinQueueCloseReleases(t *testing.T) {
	t.Parallel()
	q := newStdinQueue(0, nil)
	q.push(context.Background(), make([]byte, minStdinBuffer))
	done := make(chan error, 1)
	go func() { _, err := q.push(context.Background(), []byte{1}); done <- err }()
	q.Close()
	if err := <-done; err == nil {
		t.Fatal("push into a closed queue succeeded")
	}
	if n, err := q.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("read after Close: %d %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	q2 := newStdinQueue(0, nil)
	q2.push(ctx, make([]byte, minStdinBuffer))
	go cancel()
	if _, err := q2.push(ctx, []byte{1}); err == nil {
		t.Fatal("push past a cancelled context succeeded")
	}
}

// writeRecorder keeps what WriteTo gave it, one entry per Write.
type writeRecorder struct {
	writes [][]byte
	fail   error
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	if w.fail != nil {
		return 0, w.fail
	}
	w.writes = append(w.writes, bytes.Clone(p))
	return len(p), nil
}

// WriteTo (the frame relay's stdin pump, io.Copy) hands over every
// message in order, none larger than Read's 32 KiB, returns nil at the
// client's EOF and at Close, and returns a failed write's error.
func TestStdinQueueWriteTo(t *testing.T) {
	t.Parallel()
	var taken int
	q := newStdinQueue(0, func(n int) { taken += n })
	var want []byte
	for i, n := range []int{1, 5, 100 << 10, 32 << 10, 3} {
		p := bytes.Repeat([]byte{byte('a' + i)}, n)
		want = append(want, p...)
		if _, err := q.push(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	q.closeWrite()
	var w writeRecorder
	n, err := q.WriteTo(&w)
	if err != nil || n != int64(len(want)) || taken != len(want) {
		t.Fatalf("WriteTo: %d bytes, %v; taken %d; want %d", n, err, taken, len(want))
	}
	if got := bytes.Join(w.writes, nil); !bytes.Equal(got, want) {
		t.Fatalf("bytes differ: got %d, want %d", len(got), len(want))
	}
	for _, p := range w.writes {
		if len(p) > maxStdinWrite {
			t.Fatalf("a write of %d bytes, more than %d", len(p), maxStdinWrite)
		}
	}
	if len(w.writes) != 8 { // 1, 5, 32K×3 + 4K, 32K, 3
		t.Fatalf("%d writes, want 8 (a message is never merged or split below 32 KiB)", len(w.writes))
	}

	q = newStdinQueue(0, nil)
	done := make(chan error, 1)
	go func() { _, err := q.WriteTo(&writeRecorder{}); done <- err }()
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("WriteTo after Close: %v", err)
	}

	q = newStdinQueue(0, nil)
	q.push(context.Background(), []byte("x"))
	boom := errors.New("upstream gone")
	if _, err := q.WriteTo(&writeRecorder{fail: boom}); !errors.Is(err, boom) {
		t.Fatalf("WriteTo with a failing writer: %v", err)
	}
}

// orderWriter records writes from any goroutine and can hold them.
type orderWriter struct {
	mu     sync.Mutex
	got    []byte
	writes int
	gate   chan struct{} // when set, every write waits for a token
}

func (w *orderWriter) Write(p []byte) (int, error) {
	if w.gate != nil {
		<-w.gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, p...)
	w.writes++
	return len(p), nil
}

// With PushTo running, push writes to the exec itself when nothing is
// queued or in flight, and queues otherwise: the bytes arrive in order
// whichever goroutine wrote them, and nothing is lost or doubled.
func TestStdinQueuePushToKeepsOrder(t *testing.T) {
	t.Parallel()
	q := newStdinQueue(0, nil)
	w := &orderWriter{gate: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- q.PushTo(w) }()
	var want []byte
	// Tokens let writes through one at a time while pushes keep coming,
	// so that some go direct and some wait in the queue behind a write:
	// one write a message (none is merged or split).
	go func() {
		for range 1000 {
			w.gate <- struct{}{}
		}
	}()
	for i := range 1000 {
		p := []byte(fmt.Sprintf("<%d>", i))
		want = append(want, p...)
		if _, err := q.push(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	q.closeWrite()
	if err := <-done; err != nil {
		t.Fatalf("PushTo: %v", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !bytes.Equal(w.got, want) {
		t.Fatalf("stdin out of order or incomplete: %d bytes, want %d", len(w.got), len(want))
	}
	if q.pushedBytes() != int64(len(want)) || w.writes != 1000 {
		t.Fatalf("pushed %d in %d writes, want %d in 1000", q.pushedBytes(), w.writes, len(want))
	}
}

// startPushTo runs q.PushTo(w) and returns once push may write to w
// directly; the channel gets PushTo's result.
func startPushTo(t *testing.T, q *stdinQueue, w io.Writer) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- q.PushTo(w) }()
	if err := poll.Until(context.Background(), time.Millisecond, 5*time.Second, func(context.Context) error {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.direct == nil {
			return errors.New("PushTo has not started")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return done
}

// A keystroke with nothing queued is written by push itself (no
// hand-off); a failed direct write ends PushTo with its error and later
// pushes are refused.
func TestStdinQueueDirectWrite(t *testing.T) {
	t.Parallel()
	q := newStdinQueue(0, nil)
	w := &orderWriter{}
	done := startPushTo(t, q, w)
	if _, err := q.push(context.Background(), []byte("k")); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	got := string(w.got) // written before push returned: by push itself
	w.mu.Unlock()
	if got != "k" {
		t.Fatalf("after push returned the exec had %q, want %q (written directly)", got, "k")
	}
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("PushTo after Close: %v", err)
	}

	q = newStdinQueue(0, nil)
	boom := errors.New("upstream gone")
	fw := &writeRecorder{fail: boom}
	q.mu.Lock()
	q.direct = fw // as PushTo sets it, before its loop starts
	q.mu.Unlock()
	if _, err := q.push(context.Background(), []byte("x")); !errors.Is(err, boom) {
		t.Fatalf("direct write to a failed exec: %v", err)
	}
	if err := q.PushTo(fw); !errors.Is(err, boom) {
		t.Fatalf("PushTo after a failed direct write: %v", err)
	}
	if _, err := q.push(context.Background(), []byte("y")); err == nil {
		t.Fatal("push after a failed write succeeded")
	}
}

// gatedWriter holds the writes of chosen messages until released, says
// when one has begun, and notes two writes in flight at once (the order
// would then be the race's).
type gatedWriter struct {
	orderWriter
	hold     map[string]chan struct{}
	began    chan string
	inFlight int
	overlap  []string
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.inFlight++; w.inFlight > 1 {
		w.overlap = append(w.overlap, string(p))
	}
	w.mu.Unlock()
	w.began <- string(p)
	if c, ok := w.hold[string(p)]; ok {
		<-c
	}
	n, err := w.orderWriter.Write(p)
	w.mu.Lock()
	w.inFlight--
	w.mu.Unlock()
	return n, err
}

// The order holds whoever writes: a message pushed while the exec's
// goroutine is writing is queued behind it, a message queued while push
// is writing directly waits for that write, and never are two writes in
// flight at once.
func TestStdinQueueDirectAndQueuedInOrder(t *testing.T) {
	t.Parallel()
	q := newStdinQueue(0, nil)
	w := &gatedWriter{hold: map[string]chan struct{}{"A": make(chan struct{}), "X": make(chan struct{})}, began: make(chan string, 8)}
	next := func(want string) {
		t.Helper()
		select {
		case b := <-w.began:
			if b != want {
				t.Fatalf("write of %q began, want %q", b, want)
			}
		case <-time.After(10 * time.Second): // a bound on failure, not a synchronisation
			t.Fatalf("no write began, want %q", want)
		}
	}
	done := startPushTo(t, q, w)
	pushed := make(chan error, 1)
	go func() { _, err := q.push(context.Background(), []byte("A")); pushed <- err }() // direct, held
	next("A")
	queued := func(m string) {
		t.Helper()
		res := make(chan error, 1)
		go func() { _, err := q.push(context.Background(), []byte(m)); res <- err }()
		select {
		case err := <-res:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second): // a bound on failure
			t.Fatalf("push of %q blocked: it wrote directly while another write was in flight", m)
		}
	}
	queued("X") // behind A
	close(w.hold["A"])
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	next("X")   // the exec's goroutine writes X, held
	queued("Y") // behind X
	close(w.hold["X"])
	next("Y")
	q.closeWrite()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if string(w.got) != "AXY" || len(w.overlap) > 0 {
		t.Fatalf("the exec got %q (want AXY); writes begun while another was in flight: %q", w.got, w.overlap)
	}
}
