package hmac

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch"
)

// DefaultPollInterval is the keyring's safety-net re-read, the same period
// controller-runtime's certwatcher uses. fsnotify normally reacts within
// milliseconds; the poll only matters if an event is lost.
const DefaultPollInterval = filewatch.DefaultPoll

// KeyringOptions configures a Keyring.
type KeyringOptions struct {
	// Dir is the mount point of the Secret holding the keys. Every visible
	// file in it (name not starting with '.') is one key.
	Dir string
	// Grace is how long a key that has left Dir is still accepted, so tokens
	// minted just before a rotation still connect. 0 => DefaultMaxTTL +
	// DefaultLeeway: exactly the life of the last token signed with it.
	Grace time.Duration
	// PollInterval is the safety-net re-read. 0 => DefaultPollInterval.
	PollInterval time.Duration
	// Logger receives one line per change of state. nil => slog.Default().
	Logger *slog.Logger
	// Now is the clock for the grace period. nil => time.Now.
	Now func() time.Time
}

// keyEntry is one key the keyring knows. A key that left the directory is
// kept, with goneAt set, until its grace period is over.
type keyEntry struct {
	key    []byte
	file   string    // visible file name it was last read from
	goneAt time.Time // zero while the key is in the directory
}

// Keyring holds the HMAC keys from a mounted Secret and follows the
// kubelet's atomic updates of it. Lookup, Ready and KeyCount are lock-free
// and safe for concurrent use with reloads.
//
// Bad states never crash it and never make it drop keys silently: a reload
// that finds no valid key keeps the previous keys under the grace rule and
// logs at error level; each state is logged once when it is entered, not
// on every poll.
type Keyring struct {
	dir    string
	grace  time.Duration
	poll   time.Duration
	log    *slog.Logger
	now    func() time.Time
	keys   atomic.Pointer[map[string]keyEntry] // replaced, never mutated
	loads  atomic.Uint64
	active atomic.Bool // Run is running

	// runStarted, if set, is called once Run has its watches in place and
	// has done its first reload (tests wait on it instead of guessing).
	runStarted func()

	mu       sync.Mutex // serialises reloads and guards what follows
	reported string     // fingerprint of the state last logged
	changed  chan struct{}
}

// NewKeyring loads the keys once, synchronously. A missing or empty
// directory is not an error (it is logged and Ready reports false): the
// Secret may simply not be mounted yet. Call Run to follow changes.
func NewKeyring(opts KeyringOptions) (*Keyring, error) {
	if opts.Dir == "" {
		return nil, errors.New("hmac: KeyringOptions.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("hmac: key directory: %w", err)
	}
	if opts.Grace < 0 || opts.PollInterval < 0 {
		return nil, errors.New("hmac: negative grace or poll interval")
	}
	if opts.Grace == 0 {
		opts.Grace = DefaultMaxTTL + DefaultLeeway
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	k := &Keyring{
		dir:     dir,
		grace:   opts.Grace,
		poll:    opts.PollInterval,
		log:     opts.Logger.With("component", "hmac-keyring", "dir", dir),
		now:     opts.Now,
		changed: make(chan struct{}),
	}
	empty := map[string]keyEntry{}
	k.keys.Store(&empty)
	k.reload()
	return k, nil
}

// Lookup implements KeySource: the key named kid, if it is in the directory
// or left it less than the grace period before now.
func (k *Keyring) Lookup(kid string, now time.Time) ([]byte, bool) {
	e, ok := (*k.keys.Load())[kid]
	if !ok || !k.usable(e, now) {
		return nil, false
	}
	return e.key, true
}

func (k *Keyring) usable(e keyEntry, now time.Time) bool {
	return e.goneAt.IsZero() || now.Before(e.goneAt.Add(k.grace))
}

// KeyCount returns how many keys Lookup would accept now, counting keys
// still in their grace period.
func (k *Keyring) KeyCount() int {
	now := k.now()
	n := 0
	for _, e := range *k.keys.Load() {
		if k.usable(e, now) {
			n++
		}
	}
	return n
}

// Ready reports whether at least one key is usable now (this drives the
// proxy's /readyz).
func (k *Keyring) Ready() bool { return k.KeyCount() > 0 }

// Reloads returns how many times the set of keys changed (a key added,
// removed, or past its grace), counting the initial load if it found keys.
func (k *Keyring) Reloads() uint64 { return k.loads.Load() }

// Changed returns a channel that is closed at the next change of the key
// set (the next increment of Reloads). Take the channel, then check the
// state, then wait: a change between the two is not missed.
func (k *Keyring) Changed() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed
}

// Dir returns the absolute path of the watched directory.
func (k *Keyring) Dir() string { return k.dir }

// Run follows the directory until ctx is done, through package filewatch:
// fsnotify on the directory (which sees the kubelet's ..data swap) and on
// its parent (which sees the directory itself deleted and recreated), plus
// the poll. If inotify is unavailable it logs that and only polls. It
// returns nil when ctx is done, after every goroutine it started has
// exited.
func (k *Keyring) Run(ctx context.Context) error {
	if !k.active.CompareAndSwap(false, true) {
		return errors.New("hmac: Keyring.Run called twice")
	}
	defer k.active.Store(false)

	first := true
	return filewatch.Run(ctx, filewatch.Options{Dirs: []string{k.dir}, Poll: k.poll, Logger: k.log}, func() {
		k.reload()
		if first {
			first = false
			if k.runStarted != nil {
				k.runStarted()
			}
		}
	})
}

// problem is a file that did not yield a key.
type problem struct {
	file   string
	reason string
}

// reload re-reads the directory and publishes the new key set.
func (k *Keyring) reload() {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	prev := *k.keys.Load()
	found, problems, dirErr := k.scan(prev)

	next := make(map[string]keyEntry, len(found)+len(prev))
	maps.Copy(next, found)
	var retired, expired []string
	for kid, e := range prev {
		if _, ok := next[kid]; ok {
			continue
		}
		if e.goneAt.IsZero() {
			e.goneAt = now
			retired = append(retired, kid)
		}
		if k.usable(e, now) {
			next[kid] = e
		} else {
			expired = append(expired, kid)
		}
	}

	changed := len(next) != len(prev) || len(retired) > 0
	for kid, e := range next {
		if p, ok := prev[kid]; !ok || p.goneAt != e.goneAt {
			changed = true
		}
	}
	if changed {
		k.keys.Store(&next)
		k.loads.Add(1)
		close(k.changed)
		k.changed = make(chan struct{})
	}
	k.report(now, next, found, problems, dirErr, retired, expired)
}

// scan reads every visible file of the directory. A file that cannot be
// read for a reason other than its content (an I/O error, a symlink loop)
// keeps the key previously read from it: a transient error must not start
// a key's grace period.
func (k *Keyring) scan(prev map[string]keyEntry) (found map[string]keyEntry, problems []problem, dirErr error) {
	found = map[string]keyEntry{}
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		return found, nil, err
	}
	for _, de := range entries {
		name := de.Name()
		if strings.HasPrefix(name, ".") {
			continue // ..data, ..<timestamp>, editor and tool droppings
		}
		key, err := LoadKeyFile(filepath.Join(k.dir, name))
		switch {
		case err == nil:
			kid := KeyID(key)
			if _, dup := found[kid]; !dup {
				found[kid] = keyEntry{key: key, file: name}
			}
		case errors.Is(err, fs.ErrNotExist):
			// A visible symlink whose target vanished: the kubelet removes a
			// key's symlink right after the swap that dropped it.
			problems = append(problems, problem{name, "dangling symlink"})
		case errors.Is(err, errShortKey), errors.Is(err, errLargeKey), errors.Is(err, errNotRegular):
			problems = append(problems, problem{name, strings.TrimPrefix(err.Error(), filepath.Join(k.dir, name)+": ")})
		default:
			problems = append(problems, problem{name, "unreadable, keeping the key last read from it: " + err.Error()})
			for kid, e := range prev {
				if e.file == name && e.goneAt.IsZero() {
					found[kid] = e
				}
			}
		}
	}
	return found, problems, nil
}

// report logs the state if it differs from the one last logged.
func (k *Keyring) report(now time.Time, all, found map[string]keyEntry, problems []problem, dirErr error, retired, expired []string) {
	for _, kid := range retired {
		k.log.Warn("HMAC key left the key directory; accepting it until its grace period ends",
			"kid", kid, "until", now.Add(k.grace).UTC().Format(time.RFC3339))
	}
	for _, kid := range expired {
		k.log.Info("HMAC key grace period over; tokens signed with it are now refused", "kid", kid)
	}

	present := slices.Sorted(maps.Keys(found))
	var grace []string
	for kid, e := range all {
		if !e.goneAt.IsZero() {
			grace = append(grace, kid)
		}
	}
	slices.Sort(grace)
	// A missing directory is one state however the syscall that found it
	// words it (open vs readdirent while RemoveAll is under way).
	dirState := ""
	switch {
	case errors.Is(dirErr, fs.ErrNotExist):
		dirState = "missing"
	case dirErr != nil:
		dirState = dirErr.Error()
	}
	var fp strings.Builder
	fmt.Fprintf(&fp, "%v|%v|%v|", dirState, present, grace)
	for _, p := range problems {
		fmt.Fprintf(&fp, "%s:%s|", p.file, p.reason)
	}
	if fp.String() == k.reported {
		return
	}
	k.reported = fp.String()

	if dirErr != nil {
		msg := "cannot read the key directory"
		if errors.Is(dirErr, fs.ErrNotExist) {
			msg = "key directory does not exist"
		}
		k.log.Error(msg, "err", dirErr)
	}
	for _, p := range problems {
		k.log.Warn("key file refused", "file", p.file, "reason", p.reason)
	}
	if len(found) == 0 {
		if len(grace) > 0 {
			k.log.Error("no valid HMAC key in the key directory; keeping the previous keys until their grace period ends",
				"grace_kids", grace)
		} else {
			k.log.Error("no valid HMAC key in the key directory; every token will be refused")
		}
		return
	}
	k.log.Info("HMAC keys loaded", "kids", present, "grace_kids", grace)
}
