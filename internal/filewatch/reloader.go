package filewatch

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// ReloaderOptions configures a Reloader. Load is required; the On*
// callbacks are each called once per change of state, under the
// reloader's lock, so they can log without repeating themselves.
type ReloaderOptions[T any] struct {
	// Dirs are the directories Run watches (see Options.Dirs).
	Dirs []string
	// Poll is the safety-net period. 0 => DefaultPoll.
	Poll time.Duration
	// Logger receives watch problems. nil => slog.Default().
	Logger *slog.Logger
	// Load reads the files. It gets the value in use (the zero T before
	// anything was loaded) and returns the value to use from now on (cur,
	// to keep it), a fingerprint of that value (equal fingerprints mean
	// nothing changed; the zero T's is "") and what is wrong with the
	// files, if anything. A value is published even with an error, so a
	// loader can age what it keeps (the keyring's grace periods).
	Load func(cur T) (next T, fingerprint string, err error)
	// Required makes NewReloader fail, logging nothing, when the first
	// load returns an error: a start-up state with nothing to fall back on.
	Required bool
	// OnLoad is called when a load without error changed the value.
	OnLoad func(v T)
	// OnError is called when a load's error differs (by its text) from
	// the previous load's.
	OnError func(err error)
	// OnRecover is called when a load without error follows one with an
	// error and leaves the value as it was.
	OnRecover func()
}

// Reloader holds the value last loaded from files and loads it again
// whenever Run's watcher says the files may have changed. Value and the
// counters are lock-free; loads are serialised.
type Reloader[T any] struct {
	opts    ReloaderOptions[T]
	cur     atomic.Pointer[T]
	changes atomic.Uint64
	loads   atomic.Uint64
	errs    atomic.Uint64
	active  atomic.Bool
	started chan struct{}
	once    sync.Once

	mu          sync.Mutex // serialises loads and guards what follows
	fingerprint string
	lastErr     string
	changed     chan struct{}
}

// NewReloader loads once, synchronously. Only with Required does a first
// load's error fail it.
func NewReloader[T any](opts ReloaderOptions[T]) (*Reloader[T], error) {
	if opts.Load == nil {
		return nil, errors.New("filewatch: ReloaderOptions.Load is required")
	}
	if len(opts.Dirs) == 0 {
		return nil, errors.New("filewatch: ReloaderOptions.Dirs is empty")
	}
	if opts.Poll < 0 {
		return nil, errors.New("filewatch: negative poll interval")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &Reloader[T]{opts: opts, started: make(chan struct{}), changed: make(chan struct{})}
	var zero T
	r.cur.Store(&zero)
	r.mu.Lock()
	defer r.mu.Unlock()
	next, fp, err := opts.Load(zero)
	if err != nil && opts.Required {
		return nil, err
	}
	r.apply(next, fp, err)
	return r, nil
}

// Value returns the value in use.
func (r *Reloader[T]) Value() T { return *r.cur.Load() }

// Changes counts the loads that changed the value, the first included.
func (r *Reloader[T]) Changes() uint64 { return r.changes.Load() }

// Loads counts every load, the first included.
func (r *Reloader[T]) Loads() uint64 { return r.loads.Load() }

// Errors counts the loads that returned an error.
func (r *Reloader[T]) Errors() uint64 { return r.errs.Load() }

// Changed returns a channel closed at the next change of the value. Take
// the channel, then check the state, then wait: no change is missed.
func (r *Reloader[T]) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Started is closed once Run has its watches in place and has loaded
// once (tests wait on it instead of guessing).
func (r *Reloader[T]) Started() <-chan struct{} { return r.started }

// Reload loads now and returns the load's error.
func (r *Reloader[T]) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, fp, err := r.opts.Load(*r.cur.Load())
	r.apply(next, fp, err)
	return err
}

// apply publishes a load's result and reports the change of state, if any.
func (r *Reloader[T]) apply(next T, fp string, err error) {
	r.loads.Add(1)
	changed := fp != r.fingerprint
	if changed {
		r.cur.Store(&next)
		r.fingerprint = fp
		r.changes.Add(1)
		close(r.changed)
		r.changed = make(chan struct{})
	}
	msg := ""
	if err != nil {
		r.errs.Add(1)
		msg = err.Error()
	}
	switch {
	case err != nil && msg != r.lastErr:
		if r.opts.OnError != nil {
			r.opts.OnError(err)
		}
	case err == nil && changed:
		if r.opts.OnLoad != nil {
			r.opts.OnLoad(next)
		}
	case err == nil && r.lastErr != "":
		if r.opts.OnRecover != nil {
			r.opts.OnRecover()
		}
	}
	r.lastErr = msg
}

// Run loads again after every change Run (the package function) reports,
// until ctx is done. It refuses to run twice at once, and returns nil when
// ctx is done, after every goroutine it started has exited.
func (r *Reloader[T]) Run(ctx context.Context) error {
	if !r.active.CompareAndSwap(false, true) {
		return errors.New("filewatch: Reloader.Run called twice")
	}
	defer r.active.Store(false)
	return Run(ctx, Options{Dirs: r.opts.Dirs, Poll: r.opts.Poll, Logger: r.opts.Logger}, func() {
		_ = r.Reload()
		r.once.Do(func() { close(r.started) })
	})
}
