package recording

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTimers stands in for time.AfterFunc: a test fires the timers itself.
type fakeTimers struct {
	armed []*fakeTimer
}

type fakeTimer struct {
	d       time.Duration
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool { t.stopped = true; return true }

func (ft *fakeTimers) afterFunc(d time.Duration, f func()) stopper {
	t := &fakeTimer{d: d, f: f}
	ft.armed = append(ft.armed, t)
	return t
}

// live is the timers neither fired nor stopped.
func (ft *fakeTimers) live() []*fakeTimer {
	var l []*fakeTimer
	for _, t := range ft.armed {
		if !t.stopped {
			l = append(l, t)
		}
	}
	return l
}

func (ft *fakeTimers) fire(t *testing.T) {
	t.Helper()
	l := ft.live()
	if len(l) != 1 {
		t.Fatalf("%d timers armed, want 1", len(l))
	}
	l[0].stopped = true
	l[0].f()
}

// countingWriter counts writes and their sizes.
type countingWriter struct {
	bytes.Buffer
	sizes []int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.sizes = append(c.sizes, len(p))
	return c.Buffer.Write(p)
}

// script is a session's worth of events: small and large output, both
// streams, a split character, resizes and input.
func script(t *testing.T, w *Writer) {
	t.Helper()
	big := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz\r\n"), 1200) // 45 KiB
	for i, call := range []func() error{
		func() error { return w.Resize(120, 40) },
		func() error { return w.Output(Stdout, []byte("$ ")) },
		func() error { return w.Input([]byte("ls\r")) },
		func() error { return w.Output(Stdout, big) },
		func() error { return w.Output(Stderr, []byte("warn: \xff\n")) },
		func() error { return w.Output(Stdout, []byte("split \xe2\x9c")) },
		func() error { return w.Output(Stdout, []byte("\x93 done\n")) },
		func() error { return w.Output(Stdout, big[:700]) },
		func() error { return w.Resize(80, 24) },
		func() error { return w.Output(Stdout, big) },
		func() error { return w.Output(Stdout, []byte("tail \xe2")) },
	} {
		if err := call(); err != nil && !errors.Is(err, ErrMaxBytes) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if err := w.End(End{ExitCode: 3, Reason: "exited"}); err != nil {
		t.Fatal(err)
	}
}

// A buffered recording, once ended, is byte for byte the unbuffered one
// (the same clock readings), written in fewer, larger writes; with a size
// limit too, since the limit counts buffered bytes as written.
func TestBufferedSameBytes(t *testing.T) {
	for _, c := range []struct {
		limit        int64
		size, writes int
	}{
		// The header and 13 events in three writes: the first 45 KiB
		// chunk's buffer, the second's, and End's.
		{0, 8 << 10, 3},
		// All buffered until the limit's marker (which counts what is
		// buffered, so the same events as unbuffered pass it), then End.
		{60 << 10, 64 << 10, 2},
	} {
		limit, size := c.limit, c.size
		var direct bytes.Buffer
		wd, err := NewWriter(&direct, Header{Command: "sh"}, Options{Now: fakeClock(time.Millisecond), IncludeInput: true, MaxBytes: limit})
		if err != nil {
			t.Fatal(err)
		}
		script(t, wd)

		var ft fakeTimers
		var buffered countingWriter
		wb, err := NewWriter(&buffered, Header{Command: "sh"}, Options{Now: fakeClock(time.Millisecond), IncludeInput: true, MaxBytes: limit,
			Buffer: size, afterFunc: ft.afterFunc})
		if err != nil {
			t.Fatal(err)
		}
		if len(buffered.sizes) != 0 {
			t.Fatalf("limit %d: the header was written at once (%v)", limit, buffered.sizes)
		}
		script(t, wb)
		parseCast(t, direct.Bytes())
		if !bytes.Equal(buffered.Bytes(), direct.Bytes()) {
			g, d := buffered.Bytes(), direct.Bytes()
			i := 0
			for i < min(len(g), len(d)) && g[i] == d[i] {
				i++
			}
			t.Fatalf("limit %d: buffered recording (%d bytes) differs from unbuffered (%d) at byte %d: %q vs %q",
				limit, len(g), len(d), i, g[i:min(i+60, len(g))], d[i:min(i+60, len(d))])
		}
		if limit > 0 && !strings.Contains(direct.String(), "max_bytes") {
			t.Fatalf("limit %d not reached", limit)
		}
		if len(buffered.sizes) != c.writes || (limit == 0 && buffered.sizes[0] < size) {
			t.Errorf("limit %d: writes of %v bytes, want %d", limit, buffered.sizes, c.writes)
		}
		if wb.Written() != int64(direct.Len()) {
			t.Errorf("Written %d, file %d", wb.Written(), direct.Len())
		}
		if l := ft.live(); len(l) != 0 {
			t.Errorf("limit %d: %d timers left armed after End", limit, len(l))
		}
	}
}

// A quiet session's events wait at most FlushInterval: one timer, armed by
// the first event an empty buffer takes, writes them all.
func TestBufferedFlushTimer(t *testing.T) {
	var ft fakeTimers
	var out countingWriter
	w, err := NewWriter(&out, Header{}, Options{Buffer: 64 << 10, FlushInterval: 300 * time.Millisecond, afterFunc: ft.afterFunc})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a", "b", "c"} {
		if err := w.Output(Stdout, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if out.Len() != 0 || len(ft.armed) != 1 || ft.armed[0].d != 300*time.Millisecond {
		t.Fatalf("before the timer: %d bytes written, timers %v", out.Len(), ft.armed)
	}
	ft.fire(t)
	_, evs := parseCast(t, out.Bytes())
	if len(evs) != 3 || len(out.sizes) != 1 {
		t.Fatalf("after the timer: %d events in %d writes: %q", len(evs), len(out.sizes), out.Bytes())
	}
	// Nothing buffered: no timer. The next event arms one again.
	if len(ft.live()) != 0 {
		t.Fatal("a timer armed for an empty buffer")
	}
	if err := w.Output(Stdout, []byte("d")); err != nil {
		t.Fatal(err)
	}
	if len(ft.live()) != 1 {
		t.Fatalf("%d timers after a new event, want 1", len(ft.live()))
	}
	if err := w.End(End{}); err != nil {
		t.Fatal(err)
	}
	if len(ft.live()) != 0 {
		t.Fatal("End left the timer armed")
	}
	if _, evs := parseCast(t, out.Bytes()); len(evs) != 5 {
		t.Fatalf("after End: %d events, want 5", len(evs))
	}
}

// The real timer: a lone event reaches the writer by itself, with nothing
// else happening on the Writer.
func TestBufferedFlushRealTimer(t *testing.T) {
	var mu sync.Mutex
	var out bytes.Buffer
	w, err := NewWriter(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	}), Header{}, Options{Buffer: 64 << 10, FlushInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Output(Stdout, []byte("quiet")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := bytes.Contains(out.Bytes(), []byte(`"o","quiet"]`))
		mu.Unlock()
		if got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the event was not written within 10 s of a 20 ms flush interval")
		}
		time.Sleep(time.Millisecond)
	}
	_ = w.End(End{})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A write error found by the timer is handed to OnError (there is no call
// to return it), once, and every later call returns it.
func TestBufferedTimedFlushError(t *testing.T) {
	boom := errors.New("disk full")
	var ft fakeTimers
	var got []error
	w, err := NewWriter(&failAfter{n: 0, err: boom}, Header{}, Options{Buffer: 64 << 10, afterFunc: ft.afterFunc,
		OnError: func(err error) { got = append(got, err) }})
	if err != nil {
		t.Fatalf("a buffered header is written later: %v", err)
	}
	if err := w.Output(Stdout, []byte("lost")); err != nil {
		t.Fatalf("buffered: %v", err)
	}
	ft.fire(t)
	if len(got) != 1 || !errors.Is(got[0], boom) {
		t.Fatalf("OnError got %v", got)
	}
	if err := w.Output(Stdout, []byte("x")); !errors.Is(err, boom) {
		t.Fatalf("after the timed failure: %v", err)
	}
	if err := w.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush after the failure: %v", err)
	}
	if err := w.End(End{}); !errors.Is(err, boom) {
		t.Fatalf("End after the failure: %v", err)
	}
	if len(got) != 1 || len(ft.live()) != 0 {
		t.Fatalf("OnError %v, %d timers armed", got, len(ft.live()))
	}
}

// A best-effort recording buffers; a required one writes each event before
// the call returns (the proxy sends the client output only after that).
func TestRecordingBuffersBestEffortOnly(t *testing.T) {
	for _, mode := range []Mode{BestEffort, Required} {
		r, err := New(Config{Mode: mode, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := r.Open(Header{SID: "s-" + string(mode)})
		if err != nil {
			t.Fatal(err)
		}
		if err := rec.Output(Stdout, []byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		want := spoolBuffer
		if mode == Required {
			want = 0
			data, _ := os.ReadFile(rec.Path())
			if !bytes.Contains(data, []byte(`"o","hello\n"]`)) {
				t.Errorf("required: the event is not in the file when Output returns: %q", data)
			}
		}
		rec.mu.Lock()
		spool := rec.w.spool
		rec.mu.Unlock()
		if spool != want {
			t.Errorf("%s: buffer %d, want %d", mode, spool, want)
		}
		if err := rec.Close(End{ExitCode: 0, Reason: "exited"}); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(rec.Path())
		if _, evs := parseCast(t, data); len(evs) != 2 || evs[0].data != "hello\n" || evs[1].code != "m" {
			t.Errorf("%s: after Close %q", mode, data)
		}
		if rec.Bytes() != int64(len(data)) {
			t.Errorf("%s: Bytes %d, file %d", mode, rec.Bytes(), len(data))
		}
	}
}

// Close writes the buffered events before the end marker, and a failure
// there goes to OnError (the proxy counts it as a write failure, as it
// was one), once, and out of Close.
func TestRecordingCloseReportsBufferedWriteError(t *testing.T) {
	r, err := New(Config{Mode: BestEffort, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.Open(Header{SID: "s"})
	if err != nil {
		t.Fatal(err)
	}
	var got []error
	rec.OnError(func(err error) { got = append(got, err) })
	if err := rec.Output(Stdout, []byte("buffered")); err != nil {
		t.Fatal(err)
	}
	// The spool breaks under the open recording.
	if err := rec.f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(End{}); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Close: %v", err)
	}
	if len(got) != 1 || !errors.Is(got[0], os.ErrClosed) {
		t.Fatalf("OnError got %v, want the write error once", got)
	}
}
