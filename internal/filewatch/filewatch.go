// Package filewatch tells its caller that files in some directories may
// have changed, so the caller can re-read them. It exists for files that
// Kubernetes mounts from Secrets (HMAC keys, TLS certificates), which the
// kubelet never rewrites in place: it writes a new ..<timestamp> directory,
// renames a ..data symlink over the old one and leaves the visible names as
// symlinks through ..data. A watch on the files themselves would stay on
// the old inodes and miss every update; a watch on the directory sees the
// rename. The directory itself may also be deleted and recreated (a volume
// remounted, an operator's hand), so its parent is watched too and both
// watches are re-added after every event. A slow poll catches anything
// inotify loses (queue overflow, no inotify at all).
//
// The package says only "look again"; what changed, and whether the new
// content is any good, is the caller's business. Both hmac.Keyring and
// tlsreload.Reloader use it, so keys and certificates follow a Secret
// update the same way.
package filewatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultPoll is the safety-net period, the same one controller-runtime's
// certwatcher uses. fsnotify normally reacts within milliseconds; the poll
// only matters if an event is lost.
const DefaultPoll = 10 * time.Second

// Options configures Run.
type Options struct {
	// Dirs are the directories whose entries matter. Each is watched along
	// with its parent; none has to exist yet.
	Dirs []string
	// Poll is the safety-net period. 0 => DefaultPoll.
	Poll time.Duration
	// Logger receives watch problems (never file contents). nil =>
	// slog.Default().
	Logger *slog.Logger
}

// Run calls onChange once as soon as its watches are in place (so that a
// change between the caller's first read and Run starting is not missed),
// then after every burst of relevant events, every watch error and every
// poll tick, until ctx is done. onChange is called from Run's goroutine
// only, never concurrently with itself; a slow onChange delays the next
// look, it does not queue them. If inotify is unavailable Run logs that
// and only polls. It returns nil when ctx is done, after every goroutine it
// started has exited, and an error only for invalid Options.
func Run(ctx context.Context, opts Options, onChange func()) error {
	if len(opts.Dirs) == 0 {
		return errors.New("filewatch: Options.Dirs is empty")
	}
	if opts.Poll < 0 {
		return errors.New("filewatch: negative poll interval")
	}
	if opts.Poll == 0 {
		opts.Poll = DefaultPoll
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w, err := newDirWatch(opts.Dirs, opts.Logger, opts.Poll)
	if err != nil {
		return err
	}

	var events <-chan fsnotify.Event
	var errs <-chan error
	if fw, err := fsnotify.NewWatcher(); err != nil {
		w.log.Warn("cannot watch the directory; relying on polling alone",
			"err", err, "poll_interval", opts.Poll)
	} else {
		defer fw.Close() // waits for fsnotify's reader goroutine
		w.fw, events, errs = fw, fw.Events, fw.Errors
	}
	w.ensure()
	onChange()

	tick := time.NewTicker(opts.Poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if !w.relevant(ev) {
				continue
			}
			// The kubelet's swap arrives as a burst of events; one look
			// after the burst sees its final state.
			for more := true; more; {
				select {
				case _, ok := <-events:
					more = ok
				default:
					more = false
				}
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Typically an event queue overflow: events were lost, so look.
			w.log.Warn("directory watch error; re-reading", "err", err)
		case <-tick.C:
		}
		w.ensure()
		onChange()
	}
}

// dirWatch keeps fsnotify watches on the directories and their parents
// pointed at whatever is at those paths now. After a directory is deleted
// and recreated its old watch is dead, and the new directory may even
// reuse the old inode number, so nothing short of re-adding tells a live
// watch from a dead one. Re-adding a live watch is a no-op in the kernel
// (the same watch descriptor comes back), so every ensure simply adds all
// of them again.
type dirWatch struct {
	fw      *fsnotify.Watcher
	log     *slog.Logger
	poll    time.Duration
	dirs    map[string]bool
	paths   []string // parents first, then dirs; no duplicates
	added   map[string]bool
	lastErr string
}

func newDirWatch(dirs []string, log *slog.Logger, poll time.Duration) (*dirWatch, error) {
	w := &dirWatch{log: log, poll: poll, dirs: map[string]bool{}, added: map[string]bool{}}
	var abs []string
	for _, d := range dirs {
		if d == "" {
			return nil, errors.New("filewatch: empty directory name")
		}
		a, err := filepath.Abs(d)
		if err != nil {
			return nil, fmt.Errorf("filewatch: %w", err)
		}
		if !w.dirs[a] {
			w.dirs[a] = true
			abs = append(abs, a)
		}
	}
	// Parents first: a directory created right after ensure is then seen.
	seen := map[string]bool{}
	for _, list := range [][]string{parentsOf(abs), abs} {
		for _, p := range list {
			if !seen[p] {
				seen[p] = true
				w.paths = append(w.paths, p)
			}
		}
	}
	w.log = w.log.With("dirs", abs)
	return w, nil
}

func parentsOf(dirs []string) []string {
	out := make([]string, len(dirs))
	for i, d := range dirs {
		out[i] = filepath.Dir(d)
	}
	return out
}

// relevant reports whether ev concerns one of the directories or an entry
// in one; the parents' watches also report the directories' siblings.
func (w *dirWatch) relevant(ev fsnotify.Event) bool {
	return w.dirs[ev.Name] || w.dirs[filepath.Dir(ev.Name)]
}

func (w *dirWatch) ensure() {
	if w.fw == nil {
		return
	}
	var errs []string
	for _, path := range w.paths {
		if _, err := os.Stat(path); err != nil {
			if w.added[path] {
				_ = w.fw.Remove(path) // usually already gone with the inode
				w.added[path] = false
			}
			continue
		}
		if err := w.fw.Add(path); err != nil {
			errs = append(errs, err.Error())
			w.added[path] = false
			continue
		}
		w.added[path] = true
	}
	if msg := strings.Join(errs, "; "); msg != w.lastErr {
		w.lastErr = msg
		if msg != "" {
			w.log.Warn("cannot watch the directory; relying on polling until it works",
				"err", msg, "poll_interval", w.poll)
		}
	}
}
