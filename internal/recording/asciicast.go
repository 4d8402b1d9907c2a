// Package recording writes session recordings in asciicast v2
// (newline-delimited JSON, media type application/x-asciicast), keeps them
// in a local spool and ships them to an S3-compatible object store.
//
// The byte stream of a session is not always UTF-8, but a JSON string must
// be. Two rules keep every event valid and lose nothing:
//
//   - A multi-byte character split across two reads is held back until it is
//     complete, so a character is never cut in two events.
//   - A byte that is not part of valid UTF-8 is written as the code point
//     U+10FF00+byte (U+10FF80..U+10FFFF, the end of Supplementary Private
//     Use Area-B). A genuine U+10FF80..U+10FFFF in the stream is written as
//     its four bytes escaped the same way, so decoding is unambiguous:
//     Unescape maps every code point in that range back to one byte and
//     every other one to its UTF-8 encoding, and returns the original bytes.
//
// Private-use code points keep the file valid for every JSON parser and
// player (a lone-surrogate escape as in Python's surrogateescape is not
// valid Unicode and breaks players that write it to a terminal).
package recording

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// MediaType is the IANA-style media type of an asciicast file.
const MediaType = "application/x-asciicast"

// escapeBase is added to a non-UTF-8 byte (0x80..0xFF) to escape it.
const escapeBase = 0x10FF00

// Header is the first line of a recording. Width and Height are required
// by the format; the rest are optional, and the k8s-ws-proxy fields are
// extra keys, which asciicast v2 players ignore.
type Header struct {
	Width, Height int
	Timestamp     time.Time
	Command       string
	Title         string

	SID          string
	Subject      string
	Namespace    string
	Pod          string
	Container    string
	Node         string
	Transport    string // the client's channel protocol, e.g. v5.channel.k8s.io
	ProxyVersion string
}

// End is how a session ended, written as the recording's last event.
type End struct {
	ExitCode int    // -1 when the process has no exit status
	Reason   string // the session's end reason, as in the audit line
}

// Stream tells apart the byte streams that are decoded separately: each
// keeps its own partial UTF-8 sequence.
type Stream int

const (
	Stdout Stream = iota
	Stderr
	Stdin
	numStreams
)

// ErrMaxBytes is returned once the recording reached its size limit.
var ErrMaxBytes = errors.New("recording: size limit reached")

// ErrClosed is returned after End.
var ErrClosed = errors.New("recording: closed")

// Writer writes one asciicast v2 recording. Without Options.Buffer every
// event is one Write on the underlying writer, so a crash loses at most the
// event being written; with it, events are gathered and written a buffer at
// a time (see Options.Buffer for what that costs). It is safe for
// concurrent use; events get the order of the calls.
type Writer struct {
	mu           sync.Mutex
	w            io.Writer
	start        time.Time
	now          func() time.Time
	includeInput bool
	max          int64              // 0: no limit
	written      int64              // bytes the underlying writer took
	pending      [numStreams][]byte // an incomplete UTF-8 sequence per stream
	buf          []byte             // events not written yet (the header first)
	err          error              // first write error; sticky
	limited      bool
	closed       bool

	spool     int           // flush once buf holds this much; 0: every event
	interval  time.Duration // the most an event waits in buf
	afterFunc func(time.Duration, func()) stopper
	timer     stopper // armed by an event that found none; fires once
	onError   func(error)
}

// idleBuffer is the most buffer capacity a Writer keeps past a timed flush.
const idleBuffer = 16 << 10

// stopper is the part of *time.Timer the Writer uses (a fake in tests).
type stopper interface{ Stop() bool }

// Options tune a Writer.
type Options struct {
	// IncludeInput records stdin as "i" events; off by default because
	// keystrokes include passwords.
	IncludeInput bool
	// MaxBytes bounds the file. When an event would pass it, a marker
	// saying so is written instead and later events are dropped with
	// ErrMaxBytes; the end marker is still written (so the file may pass
	// MaxBytes by those two short lines). Zero means no limit.
	MaxBytes int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Start is time zero of the events; zero means now.
	Start time.Time
	// Buffer, when positive, gathers events and writes them once they
	// pass Buffer bytes, FlushInterval after the oldest unwritten one, and
	// at End: one write per Buffer bytes instead of one per event. The cost:
	// a crash loses what is buffered (at most Buffer bytes plus one event,
	// or FlushInterval of output), and a write error surfaces at the next
	// flush, up to FlushInterval after the event it fails (OnError is told
	// when no call is there to return it). Zero writes every event at once.
	Buffer int
	// FlushInterval bounds how long an event stays buffered; zero means
	// DefaultFlushInterval.
	FlushInterval time.Duration
	// OnError is called, outside the Writer's lock, with a write error
	// found by a timed flush (one with no Output or Resize call to return
	// it); it is called at most once, since errors are sticky.
	OnError func(error)

	afterFunc func(time.Duration, func()) stopper // nil: time.AfterFunc
}

// DefaultFlushInterval bounds how far a buffered recording lags behind
// its session: a quiet interactive session's output is on disk within it.
const DefaultFlushInterval = time.Second

// NewWriter writes h to w and returns a Writer for the events.
func NewWriter(w io.Writer, h Header, o Options) (*Writer, error) {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	if h.Width <= 0 || h.Height <= 0 {
		// The format requires both; a session without a tty has no size,
		// and players need one: use the classic terminal's.
		h.Width, h.Height = 80, 24
	}
	if h.Timestamp.IsZero() {
		h.Timestamp = now()
	}
	start := o.Start
	if start.IsZero() {
		start = now()
	}
	rw := &Writer{w: w, start: start, now: now, includeInput: o.IncludeInput, max: o.MaxBytes,
		spool: max(o.Buffer, 0), interval: o.FlushInterval, afterFunc: o.afterFunc, onError: o.OnError}
	if rw.interval <= 0 {
		rw.interval = DefaultFlushInterval
	}
	if rw.afterFunc == nil {
		rw.afterFunc = func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
	}
	rw.buf = appendHeader(rw.buf, h)
	if err := rw.queuedLocked(); err != nil {
		return nil, err
	}
	return rw, nil
}

func appendHeader(b []byte, h Header) []byte {
	b = append(b, `{"version":2,"width":`...)
	b = strconv.AppendInt(b, int64(h.Width), 10)
	b = append(b, `,"height":`...)
	b = strconv.AppendInt(b, int64(h.Height), 10)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, h.Timestamp.Unix(), 10)
	for _, kv := range [...]struct{ k, v string }{
		{"command", h.Command}, {"title", h.Title},
		{"sid", h.SID}, {"sub", h.Subject}, {"namespace", h.Namespace}, {"pod", h.Pod},
		{"container", h.Container}, {"node", h.Node}, {"transport", h.Transport},
		{"proxy_version", h.ProxyVersion},
	} {
		if kv.v == "" {
			continue
		}
		b = append(b, ',', '"')
		b = append(b, kv.k...)
		b = append(b, '"', ':')
		b = appendString(b, []byte(kv.v))
	}
	return append(b, '}', '\n')
}

// Output records bytes the client received on stdout or stderr.
func (w *Writer) Output(s Stream, p []byte) error {
	return w.data(s, 'o', p)
}

// Input records bytes the client sent; a no-op unless IncludeInput.
func (w *Writer) Input(p []byte) error {
	if !w.includeInput {
		return nil
	}
	return w.data(Stdin, 'i', p)
}

// Resize records a terminal size as an "r" event.
func (w *Writer) Resize(cols, rows int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	return w.eventLocked('r', []byte(strconv.Itoa(cols)+"x"+strconv.Itoa(rows)), false)
}

// Marker records an "m" event with label.
func (w *Writer) Marker(label string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	return w.eventLocked('m', []byte(label), false)
}

// End flushes held-back bytes (escaped, since they never completed) and
// writes the end marker. asciicast v2 has no exit event (v3's "x" is not
// v2) and no trailer line: every line after the header must be an event,
// or parsers such as asciinema's reject the file. A marker ("m") is the
// one v2 event meant for annotations; players that do not know markers
// skip it. Its label is JSON so that tools can read it back:
//
//	[12.345678,"m","{\"event\":\"end\",\"exit_code\":3,\"reason\":\"exited\"}"]
func (w *Writer) End(e End) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		w.closed = true
		w.stopTimerLocked()
		return w.err
	}
	if !w.limited {
		for s := Stream(0); s < numStreams; s++ {
			if len(w.pending[s]) == 0 {
				continue
			}
			code := byte('o')
			if s == Stdin {
				code = 'i'
			}
			p := w.pending[s]
			w.pending[s] = nil
			if err := w.eventLocked(code, p, false); err != nil && !errors.Is(err, ErrMaxBytes) {
				w.closed = true
				return err
			}
		}
	}
	label := `{"event":"end","exit_code":` + strconv.Itoa(e.ExitCode) + `,"reason":` + string(appendString(nil, []byte(e.Reason))) + `}`
	err := w.eventLocked('m', []byte(label), true)
	if err == nil {
		err = w.flushLocked()
	}
	w.closed = true
	w.stopTimerLocked()
	return err
}

// Flush writes the buffered events (not a held-back partial character:
// End writes that); a no-op without Options.Buffer.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil && !errors.Is(err, ErrMaxBytes) {
		return err
	}
	return w.flushLocked()
}

// Written is the number of bytes the underlying writer took so far (not
// counting buffered events).
func (w *Writer) Written() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written
}

func (w *Writer) usable() error {
	switch {
	case w.closed:
		return ErrClosed
	case w.err != nil:
		return w.err
	case w.limited:
		return ErrMaxBytes
	}
	return nil
}

func (w *Writer) data(s Stream, code byte, p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	// Join the held-back prefix, then hold back a new incomplete tail.
	if len(w.pending[s]) > 0 {
		p = append(w.pending[s], p...)
		w.pending[s] = nil
	}
	cut := incompleteTail(p)
	if cut < len(p) {
		w.pending[s] = append([]byte(nil), p[cut:]...)
		p = p[:cut]
	}
	if len(p) == 0 {
		return nil
	}
	return w.eventLocked(code, p, false)
}

// eventLocked queues [time, code, data] and writes what is queued when it
// is due. force skips the size limit (the end marker and the truncation
// marker).
func (w *Writer) eventLocked(code byte, data []byte, force bool) error {
	mark := len(w.buf)
	b := w.buf
	b = append(b, '[')
	b = appendSeconds(b, w.now().Sub(w.start))
	b = append(b, ',', '"', code, '"', ',')
	b = appendString(b, data)
	b = append(b, ']', '\n')
	w.buf = b
	// The limit counts buffered events as written: the file's size must
	// not depend on when flushes happen.
	if !force && w.max > 0 && w.written+int64(len(b)) > w.max {
		w.limited = true
		b = w.buf[:mark]
		b = append(b, '[')
		b = appendSeconds(b, w.now().Sub(w.start))
		b = append(b, `,"m","{\"event\":\"truncated\",\"reason\":\"max_bytes\"}"]`+"\n"...)
		w.buf = b
		if err := w.flushLocked(); err != nil {
			return err
		}
		return ErrMaxBytes
	}
	return w.queuedLocked()
}

// queuedLocked writes buf now if it is due (unbuffered, or full), or makes
// sure a timer will.
func (w *Writer) queuedLocked() error {
	if len(w.buf) >= w.spool {
		return w.flushLocked()
	}
	if w.timer == nil {
		w.timer = w.afterFunc(w.interval, w.timedFlush)
	}
	return nil
}

// timedFlush writes what waited FlushInterval. The timer is disarmed, not
// reset, by other flushes: it fires at most once an interval, and finds
// an empty buffer when a full one was written meanwhile.
func (w *Writer) timedFlush() {
	w.mu.Lock()
	w.timer = nil
	if w.closed || w.err != nil || len(w.buf) == 0 {
		w.mu.Unlock()
		return
	}
	err := w.flushLocked()
	if cap(w.buf) > idleBuffer {
		// The session went quiet: an idle session holds no large buffer.
		w.buf = nil
	}
	onError := w.onError
	w.mu.Unlock()
	if err != nil && onError != nil {
		onError(err)
	}
}

func (w *Writer) stopTimerLocked() {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}

// flushLocked writes buf; on a failure what was not written is dropped
// (the error is sticky: nothing more will be written).
func (w *Writer) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.writeLocked(w.buf)
	w.buf = w.buf[:0]
	return err
}

func (w *Writer) writeLocked(b []byte) error {
	n, err := w.w.Write(b)
	w.written += int64(n)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("recording: write: %w", err)
		return w.err
	}
	return nil
}

// appendSeconds writes d as seconds with microseconds, as asciinema does.
func appendSeconds(b []byte, d time.Duration) []byte {
	if d < 0 {
		d = 0
	}
	us := d.Microseconds()
	b = strconv.AppendInt(b, us/1e6, 10)
	b = append(b, '.')
	frac := us % 1e6
	for div := int64(1e5); div > 0; div /= 10 {
		b = append(b, byte('0'+frac/div%10))
	}
	return b
}

// incompleteTail returns the offset of a trailing incomplete (but so far
// valid) UTF-8 sequence in p, or len(p) if there is none.
func incompleteTail(p []byte) int {
	// A sequence is at most 4 bytes: look at the last 3 for a lead byte.
	for i := len(p) - 1; i >= 0 && i >= len(p)-3; i-- {
		c := p[i]
		if c < 0x80 {
			return len(p)
		}
		if c >= 0xC0 { // a lead byte
			if utf8.FullRune(p[i:]) {
				return len(p)
			}
			// FullRune is also true for invalid prefixes; here it was
			// false, so p[i:] is a valid prefix of a longer sequence.
			return i
		}
	}
	return len(p)
}

const hexDigits = "0123456789abcdef"

// plain is 1 for the bytes a JSON string holds as they are: printable
// ASCII but '"' and '\\'.
var plain = func() (t [256]uint8) {
	for c := 0x20; c < 0x7f; c++ {
		if c != '"' && c != '\\' {
			t[c] = 1
		}
	}
	return t
}()

// plainRun returns the index of the first byte at or after i in p that
// is not plain, or len(p). Printable ASCII is most of any session's
// output: eight table loads and one branch a word scan it 2.4x as fast as
// a branch a byte (a SWAR bit test was slower than both, as Go compiles it).
func plainRun(p []byte, i int) int {
	for ; i+8 <= len(p); i += 8 {
		q := p[i : i+8 : i+8]
		if plain[q[0]]&plain[q[1]]&plain[q[2]]&plain[q[3]]&plain[q[4]]&plain[q[5]]&plain[q[6]]&plain[q[7]] == 0 {
			break
		}
	}
	for i < len(p) && plain[p[i]] != 0 {
		i++
	}
	return i
}

// appendString appends p as a JSON string, escaping bytes that are not
// UTF-8 (and genuine escape-range code points) as the package doc says.
func appendString(b []byte, p []byte) []byte {
	b = slices.Grow(b, len(p)+2)
	b = append(b, '"')
	run := 0 // p[run:i] is held as it is and not appended yet
	for i := 0; i < len(p); {
		i = plainRun(p, i)
		if i == len(p) {
			break
		}
		c := p[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(p[i:])
			if (r != utf8.RuneError || size > 1) && r < escapeBase+0x80 {
				i += size // valid UTF-8 joins the run
				continue
			}
			// Escape each byte of an invalid sequence, or of a genuine
			// code point from the escape range.
			b = append(b, p[run:i]...)
			for _, x := range p[i : i+size] {
				b = utf8.AppendRune(b, rune(escapeBase+int(x)))
			}
			i += size
			run = i
			continue
		}
		b = append(b, p[run:i]...)
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		default: // below 0x20, or 0x7f
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		run = i
	}
	b = append(b, p[run:]...)
	return append(b, '"')
}

// Unescape returns the original bytes of a decoded event string: the
// inverse of the escaping described in the package doc.
func Unescape(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r >= escapeBase+0x80 && r <= escapeBase+0xFF {
			out = append(out, byte(r-escapeBase))
			continue
		}
		out = utf8.AppendRune(out, r)
	}
	return out
}
