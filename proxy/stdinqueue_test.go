package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"
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
