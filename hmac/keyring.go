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
	"sync/atomic"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch"
)

// DefaultPollInterval is the keyring's safety-net re-read (see
// filewatch.DefaultPoll).
const DefaultPollInterval = filewatch.DefaultPoll

// maxRefusedLogged bounds the "key file refused" lines of one reload; the
// rest are counted in one line (a directory of junk must not flood the log).
const maxRefusedLogged = 10

// KeyringOptions configures a Keyring.
type KeyringOptions struct {
	// Dir is the mount point of the Secret holding the keys. Every visible
	// file in it (name not starting with '.') is one key.
	Dir string
	// Grace is how long a key that has left Dir is still accepted.
	// 0 => DefaultMaxTTL + DefaultLeeway: the life of the last token signed
	// with it.
	Grace time.Duration
	// PollInterval is the safety-net re-read. 0 => DefaultPollInterval.
	PollInterval time.Duration
	// Logger receives one line per change of state. nil => slog.Default().
	Logger *slog.Logger
	// Now is the clock for the grace period. nil => time.Now.
	Now func() time.Time
}

// keyEntry is one key the keyring knows; goneAt is set once it has left
// the directory, and the entry is dropped when its grace is over.
type keyEntry struct {
	key    []byte
	file   string    // visible file name it was last read from
	goneAt time.Time // zero while the key is in the directory
}

type keySet = map[string]keyEntry

// Keyring holds the HMAC keys of a mounted Secret and follows the kubelet's
// updates of it (docs/tokens.md, "Keys and rotation"). Lookup, Ready and
// KeyCount are lock-free. A bad update never drops a key at once: keys
// that left the directory stay usable for the grace period.
type Keyring struct {
	dir   string
	grace time.Duration
	log   *slog.Logger
	now   func() time.Time
	r     *filewatch.Reloader[keySet]

	// Guarded by the reloader's lock (only Load touches them).
	refused      map[string]string // file -> reason last logged
	refusedCount atomic.Int64
}

// NewKeyring loads the keys once. A missing or empty directory is not an
// error (it is logged and Ready reports false): the Secret may not be
// mounted yet. Call Run to follow changes.
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
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	k := &Keyring{
		dir:     dir,
		grace:   opts.Grace,
		log:     opts.Logger.With("component", "hmac-keyring", "dir", dir),
		now:     opts.Now,
		refused: map[string]string{},
	}
	k.r, err = filewatch.NewReloader(filewatch.ReloaderOptions[keySet]{
		Dirs:    []string{dir},
		Poll:    opts.PollInterval,
		Logger:  k.log,
		Load:    k.load,
		OnLoad:  k.logLoaded,
		OnError: k.logError,
	})
	if err != nil {
		return nil, fmt.Errorf("hmac: %w", err)
	}
	return k, nil
}

// Lookup implements KeySource: the key named kid, if it is in the directory
// or left it less than the grace period before now.
func (k *Keyring) Lookup(kid string, now time.Time) ([]byte, bool) {
	e, ok := k.r.Value()[kid]
	if !ok || !k.usable(e, now) {
		return nil, false
	}
	return e.key, true
}

func (k *Keyring) usable(e keyEntry, now time.Time) bool {
	return e.goneAt.IsZero() || now.Before(e.goneAt.Add(k.grace))
}

// KeyCount returns how many keys Lookup would accept now, keys in their
// grace period included.
func (k *Keyring) KeyCount() int {
	now := k.now()
	n := 0
	for _, e := range k.r.Value() {
		if k.usable(e, now) {
			n++
		}
	}
	return n
}

// Ready reports whether at least one key is usable now (the proxy's /readyz).
func (k *Keyring) Ready() bool { return k.KeyCount() > 0 }

// Reloads returns how many times the set of keys changed (a key added,
// removed, or past its grace), the initial load included if it found keys.
func (k *Keyring) Reloads() uint64 { return k.r.Changes() }

// Changed returns a channel closed at the next change of the key set. Take
// the channel, then check the state, then wait: no change is missed.
func (k *Keyring) Changed() <-chan struct{} { return k.r.Changed() }

// Dir returns the absolute path of the watched directory.
func (k *Keyring) Dir() string { return k.dir }

// Run follows the directory (see filewatch.Run) until ctx is done, and
// returns nil once every goroutine it started has exited.
func (k *Keyring) Run(ctx context.Context) error { return k.r.Run(ctx) }

func (k *Keyring) reload() { _ = k.r.Reload() }

// problem is a file that did not yield a key.
type problem struct {
	file   string
	reason string
}

// noKeyError is the state of a directory that yields no valid key. Its
// text tells states apart, so each is logged once.
type noKeyError struct {
	dirErr error
	grace  []string // kids still accepted
}

func (e *noKeyError) Error() string {
	dir := ""
	switch {
	case errors.Is(e.dirErr, fs.ErrNotExist):
		// One state however the syscall that found it words it.
		dir = "key directory does not exist; "
	case e.dirErr != nil:
		dir = "cannot read the key directory: " + e.dirErr.Error() + "; "
	}
	return fmt.Sprintf("%sno valid HMAC key (grace %v)", dir, e.grace)
}

// load re-reads the directory: the keys in it, plus those that left it
// less than the grace period ago.
func (k *Keyring) load(prev keySet) (keySet, string, error) {
	now := k.now()
	found, problems, dirErr := k.scan(prev)
	k.reportRefused(problems)

	next := make(keySet, len(found)+len(prev))
	maps.Copy(next, found)
	for kid, e := range prev {
		if _, ok := next[kid]; ok {
			continue
		}
		if e.goneAt.IsZero() {
			e.goneAt = now
			k.log.Warn("HMAC key left the key directory; accepting it until its grace period ends",
				"kid", kid, "until", now.Add(k.grace).UTC().Format(time.RFC3339))
		}
		if k.usable(e, now) {
			next[kid] = e
		} else {
			k.log.Info("HMAC key grace period over; tokens signed with it are now refused", "kid", kid)
		}
	}

	var fp strings.Builder
	for _, kid := range slices.Sorted(maps.Keys(next)) {
		fmt.Fprintf(&fp, "%s@%d|", kid, next[kid].goneAt.UnixNano())
	}
	if len(found) > 0 && dirErr == nil {
		return next, fp.String(), nil
	}
	_, grace := split(next)
	return next, fp.String(), &noKeyError{dirErr: dirErr, grace: grace}
}

// scan reads every visible file of the directory. A file unreadable for a
// reason other than its content (an I/O error, a symlink loop) keeps the
// key last read from it: a transient error must not start a grace period.
func (k *Keyring) scan(prev keySet) (found keySet, problems []problem, dirErr error) {
	found = keySet{}
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
			// The kubelet removes a dropped key's symlink right after the swap.
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

// reportRefused logs each refused file once per change of its reason, at
// most maxRefusedLogged of them per reload.
func (k *Keyring) reportRefused(problems []problem) {
	now := make(map[string]string, len(problems))
	listed, unlisted := 0, 0
	for _, p := range problems {
		now[p.file] = p.reason
		if k.refused[p.file] == p.reason {
			continue
		}
		if listed < maxRefusedLogged {
			listed++
			k.log.Warn("key file refused", "file", p.file, "reason", p.reason)
		} else {
			unlisted++
		}
	}
	if unlisted > 0 {
		k.log.Warn("more key files refused; not listed one by one", "not_listed", unlisted, "refused_files", len(problems))
	}
	k.refused = now
	k.refusedCount.Store(int64(len(problems)))
}

// split returns the kids in the directory and those in their grace, sorted.
func split(keys keySet) (present, grace []string) {
	for kid, e := range keys {
		if e.goneAt.IsZero() {
			present = append(present, kid)
		} else {
			grace = append(grace, kid)
		}
	}
	slices.Sort(present)
	slices.Sort(grace)
	return present, grace
}

func (k *Keyring) logLoaded(keys keySet) {
	present, grace := split(keys)
	k.log.Info("HMAC keys loaded", "kids", present, "grace_kids", grace)
}

func (k *Keyring) logError(err error) {
	var e *noKeyError
	if !errors.As(err, &e) {
		k.log.Error("cannot load the HMAC keys", "err", err)
		return
	}
	if e.dirErr != nil {
		msg := "cannot read the key directory"
		if errors.Is(e.dirErr, fs.ErrNotExist) {
			msg = "key directory does not exist"
		}
		k.log.Error(msg, "err", e.dirErr)
	}
	if len(e.grace) > 0 {
		k.log.Error("no valid HMAC key in the key directory; keeping the previous keys until their grace period ends",
			"grace_kids", e.grace)
	} else {
		k.log.Error("no valid HMAC key in the key directory; every token will be refused")
	}
}
