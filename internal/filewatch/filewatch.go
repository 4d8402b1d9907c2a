// Package filewatch follows files that Kubernetes mounts from Secrets: Run
// says "look again" after the kubelet's ..data swap, a recreated directory
// or a poll tick, and Reloader keeps the last good value loaded from them.
// docs/reloading.md explains why it watches directories and their parents.
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

// DefaultPoll is the safety-net period (controller-runtime's certwatcher's);
// it only matters if an inotify event is lost.
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

// Run calls onChange once its watches are in place (so nothing between the
// caller's first read and now is missed), then after every burst of events,
// watch error and poll tick, until ctx is done. onChange runs on Run's
// goroutine only; a slow one delays the next look rather than queueing it.
// Without inotify Run only polls. It returns nil once ctx is done and its
// goroutines have exited, and an error only for invalid Options.
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

// dirWatch keeps watches on the directories and their parents pointed at
// whatever is at those paths now: ensure re-adds them all, since a
// recreated directory may reuse the old inode and re-adding is a no-op.
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
