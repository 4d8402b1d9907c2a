package recording

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/choice"
)

// Mode says what a session without a working recording does.
type Mode string

const (
	// Off records nothing.
	Off Mode = "off"
	// BestEffort records when it can: a recording that cannot be opened or
	// written is logged and counted, and the session goes on.
	BestEffort Mode = "best-effort"
	// Required fails closed: no session starts without an open recording,
	// and one whose recording fails ends.
	Required Mode = "required"
)

// ParseMode parses a --recording value.
func ParseMode(s string) (Mode, error) {
	return choice.Parse("recording mode", s, Off, Off, BestEffort, Required)
}

// Ext is the file extension of a recording.
const Ext = ".cast"

// Config configures a Recorder.
type Config struct {
	Mode         Mode
	Dir          string // the spool: recordings are written here
	IncludeInput bool
	MaxBytes     int64
	Uploader     *Uploader // nil keeps recordings in Dir
	Logger       *slog.Logger
}

// Recorder opens per-session recordings in the spool directory and hands
// finished ones to the uploader.
type Recorder struct {
	cfg Config
	log *slog.Logger
	wg  sync.WaitGroup
}

// New checks cfg and creates the spool directory.
func New(cfg Config) (*Recorder, error) {
	if _, err := ParseMode(string(cfg.Mode)); err != nil {
		return nil, err
	}
	if cfg.Mode == "" {
		cfg.Mode = Off
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBytes < 0 {
		return nil, errors.New("recording: max bytes must not be negative")
	}
	if cfg.Mode != Off {
		if cfg.Dir == "" {
			return nil, errors.New("recording: a spool directory is required")
		}
		// Recordings hold what users typed and saw: owner only.
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("recording: spool: %w", err)
		}
	}
	return &Recorder{cfg: cfg, log: cfg.Logger}, nil
}

// Mode is the configured mode.
func (r *Recorder) Mode() Mode {
	if r == nil {
		return Off
	}
	return r.cfg.Mode
}

// Enabled reports whether sessions are recorded.
func (r *Recorder) Enabled() bool { return r.Mode() != Off }

// Required reports whether a session must not run unrecorded.
func (r *Recorder) Required() bool { return r.Mode() == Required }

// Start queues every recording already in the spool (left by a crash or a
// restart, or not yet confirmed by the store) and runs the uploader until
// ctx ends. It returns at once; Wait waits for it to stop.
func (r *Recorder) Start(ctx context.Context) error {
	if !r.Enabled() || r.cfg.Uploader == nil {
		return nil
	}
	left, err := filepath.Glob(filepath.Join(r.cfg.Dir, "*"+Ext))
	if err != nil {
		return err
	}
	for _, f := range left {
		r.cfg.Uploader.Enqueue(f)
	}
	if len(left) > 0 {
		r.log.Info("recordings left in the spool will be uploaded", "event", "recording_spool_resume", "files", len(left))
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.cfg.Uploader.Run(ctx)
	}()
	return nil
}

// Wait returns once the uploader started by Start has stopped.
func (r *Recorder) Wait() { r.wg.Wait() }

// Recording is one session's recording. The file is created by Open (so a
// spool that cannot take it is known before the session starts); the
// header is written with the first event, when the terminal size is known.
type Recording struct {
	r      *Recorder
	path   string
	f      *os.File
	header Header
	start  time.Time

	mu       sync.Mutex
	w        *Writer
	onError  func(error)
	reported atomic.Bool
}

// spoolBuffer is how much a best-effort recording gathers before a
// write(2): one write per 64 KiB instead of one per chunk of output cut the
// recorder's share of a bulk session's CPU. A required recording writes
// every event before the client gets it (docs/recording.md), so it is not
// buffered.
const spoolBuffer = 64 << 10

// Open creates the recording file for a session. The file is named after
// the session id (made safe for a file name), with a random suffix if that
// name is taken.
func (r *Recorder) Open(h Header) (*Recording, error) {
	if !r.Enabled() {
		return nil, errors.New("recording: off")
	}
	base := safeName(h.SID)
	var f *os.File
	var err error
	for i := 0; i < 4; i++ {
		name := base
		if i > 0 {
			var b [4]byte
			_, _ = rand.Read(b[:])
			name += "-" + hex.EncodeToString(b[:])
		}
		f, err = os.OpenFile(filepath.Join(r.cfg.Dir, name+Ext), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	if h.Timestamp.IsZero() {
		h.Timestamp = time.Now()
	}
	return &Recording{r: r, path: f.Name(), f: f, header: h, start: time.Now()}, nil
}

// safeName keeps a session id to [A-Za-z0-9_-] (an id comes from a token:
// it must not name a path).
func safeName(sid string) string {
	var b strings.Builder
	for _, c := range sid {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 64 {
			break
		}
	}
	if b.Len() == 0 {
		return "session"
	}
	return b.String()
}

// OnError sets f to be told of a write error that no call returned: one
// found when buffered events are written on a timer, with the session
// quiet, or by Close before the end marker. f is called at most once, and
// may be told of an error an Output call returned as well. Call it before
// the first event.
func (rec *Recording) OnError(f func(error)) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.onError = f
}

func (rec *Recording) report(err error) {
	rec.mu.Lock()
	f := rec.onError
	rec.mu.Unlock()
	if f != nil && rec.reported.CompareAndSwap(false, true) {
		f(err)
	}
}

// Path is the spool file.
func (rec *Recording) Path() string { return rec.path }

// writer returns the writer, writing the header first if needed. width
// and height, when positive, are the terminal size for the header.
func (rec *Recording) writer(width, height int) (*Writer, error) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.w != nil {
		return rec.w, nil
	}
	h := rec.header
	if width > 0 && height > 0 {
		h.Width, h.Height = width, height
	}
	o := Options{
		IncludeInput: rec.r.cfg.IncludeInput, MaxBytes: rec.r.cfg.MaxBytes,
		Now: time.Now, Start: rec.start, OnError: rec.report,
	}
	if !rec.r.Required() {
		o.Buffer = spoolBuffer
	}
	w, err := NewWriter(rec.f, h, o)
	if err != nil {
		return nil, err
	}
	rec.w = w
	return w, nil
}

// Output records what the client received on stdout or stderr.
func (rec *Recording) Output(s Stream, p []byte) error {
	w, err := rec.writer(0, 0)
	if err != nil {
		return err
	}
	return w.Output(s, p)
}

// Input records stdin (only with IncludeInput).
func (rec *Recording) Input(p []byte) error {
	if !rec.r.cfg.IncludeInput {
		return nil
	}
	w, err := rec.writer(0, 0)
	if err != nil {
		return err
	}
	return w.Input(p)
}

// Resize records a terminal size; the first one also sizes the header.
func (rec *Recording) Resize(cols, rows int) error {
	w, err := rec.writer(cols, rows)
	if err != nil {
		return err
	}
	return w.Resize(cols, rows)
}

// Close writes the end marker, syncs and closes the file, and queues it
// for upload. The file is queued even after a write error: what was
// written is still evidence.
func (rec *Recording) Close(e End) error {
	w, err := rec.writer(0, 0)
	if err == nil {
		// The session's own events first, then the end marker: a failure
		// writing buffered events is a write failure, as it would have
		// been unbuffered, and not the close's.
		if ferr := w.Flush(); ferr != nil {
			rec.report(ferr)
		}
		err = w.End(e)
		if errors.Is(err, ErrClosed) {
			err = nil
		}
	}
	if serr := rec.f.Sync(); err == nil {
		err = serr
	}
	if cerr := rec.f.Close(); err == nil && !errors.Is(cerr, os.ErrClosed) {
		err = cerr
	}
	if u := rec.r.cfg.Uploader; u != nil {
		u.Enqueue(rec.path)
	}
	return err
}

// Discard closes and removes the file of a session that never started.
func (rec *Recording) Discard() {
	_ = rec.f.Close()
	_ = os.Remove(rec.path)
}

// Bytes is the size written so far.
func (rec *Recording) Bytes() int64 {
	rec.mu.Lock()
	w := rec.w
	rec.mu.Unlock()
	if w == nil {
		return 0
	}
	return w.Written()
}
