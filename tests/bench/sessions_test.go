package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/tools/remotecommand"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// ended reports whether err is how a session ends when its client cancels
// it (the client going away, as guacd does) or a clean exit.
func ended(err error) bool { return err == nil || errors.Is(err, context.Canceled) }

// zeros is the bulk session's command: size bytes of stdout, no tty.
func zeros(size int64) []string {
	return []string{"head", "-c", strconv.FormatInt(size, 10), "/dev/zero"}
}

// bulkOnce runs cmd (which prints size bytes) without a tty and returns
// the time from dial to the end of the session.
func bulkOnce(p path, cmd []string, size int64) (time.Duration, error) {
	out := &countWriter{}
	errw := newFirstByte()
	run, err := p.prepare(session{Command: cmd, Stdout: out, Stderr: errw})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	err = run(ctx)
	d := time.Since(start)
	if err != nil {
		_, stderr := errw.result()
		return d, fmt.Errorf("%v (stderr %q)", err, stderr)
	}
	if got := out.count(); got != size {
		return d, fmt.Errorf("got %d bytes of stdout, want %d", got, size)
	}
	return d, nil
}

// setupOnce runs `echo ok` and returns the time from dial to the first
// byte of output.
func setupOnce(p path) (time.Duration, error) {
	out := newFirstByte()
	run, err := p.prepare(session{Command: []string{"echo", "ok"}, Stdout: out})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err = run(ctx)
	at, got := out.result()
	if err != nil {
		return 0, err
	}
	if string(got) != "ok\n" {
		return 0, fmt.Errorf("stdout %q, want %q", got, "ok\n")
	}
	return at.Sub(start), nil
}

// echoScript makes the echo travel through the process, as a shell's
// does (readline echoes in raw mode), not through the pty's line
// discipline: stty raw -echo, then cat copies back each byte as it reads
// it. "R" says the terminal is in raw mode.
const echoScript = "stty raw -echo && printf R && exec cat"

// live is a session running in a goroutine of its own, its stdin a pipe.
type live struct {
	stdin  *io.PipeWriter
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// startLive prepares and starts the session mk builds from the session's
// context and stdin.
func startLive(p path, mk func(ctx context.Context, stdin io.Reader) session) (*live, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stdinR, stdinW := io.Pipe()
	run, err := p.prepare(mk(ctx, stdinR))
	if err != nil {
		cancel()
		return nil, err
	}
	l := &live{stdin: stdinW, cancel: cancel, done: make(chan struct{})}
	go func() {
		l.err = run(ctx)
		// client-go may still be reading stdin; make it return.
		stdinW.Close()
		close(l.done)
	}()
	return l, nil
}

// await waits until ready is closed; if the session ends first, or
// within passes, it ends the session and says so.
func (l *live) await(p path, ready <-chan struct{}, within time.Duration, what string) error {
	select {
	case <-ready:
		return nil
	case <-l.done:
		l.cancel()
		return fmt.Errorf("%s: session ended before %s: %v", p.name(), what, l.err)
	case <-time.After(within):
		l.close()
		return fmt.Errorf("%s: not %s within %v", p.name(), what, within)
	}
}

// close ends the session the way a client that goes away does.
func (l *live) close() error {
	l.cancel()
	<-l.done
	if !ended(l.err) {
		return l.err
	}
	return nil
}

// echoSession is a live tty session echoing every byte sent to it.
type echoSession struct {
	*live
	out chan byte
}

func openEcho(p path) (*echoSession, error) {
	w := &chanWriter{c: make(chan byte, 64), first: make(chan struct{})}
	l, err := startLive(p, func(ctx context.Context, stdin io.Reader) session {
		w.ctx = ctx
		return session{Command: []string{"sh", "-c", echoScript}, TTY: true,
			Stdin: stdin, Stdout: w, Sizes: testenv.NewSizeQueue(ctx, remotecommand.TerminalSize{Width: 80, Height: 24})}
	})
	if err != nil {
		return nil, err
	}
	if err := l.await(p, w.first, 30*time.Second, "its terminal was ready"); err != nil {
		return nil, err
	}
	if c := <-w.c; c != 'R' {
		l.close()
		return nil, fmt.Errorf("%s: first output byte %q, want 'R'", p.name(), c)
	}
	return &echoSession{live: l, out: w.c}, nil
}

// roundTrip sends one byte and waits for it to come back.
func (s *echoSession) roundTrip(c byte) (time.Duration, error) {
	start := time.Now()
	if _, err := s.stdin.Write([]byte{c}); err != nil {
		return 0, err
	}
	select {
	case got := <-s.out:
		d := time.Since(start)
		if got != c {
			return d, fmt.Errorf("echo %q, sent %q", got, c)
		}
		return d, nil
	case <-s.done:
		return 0, fmt.Errorf("session ended: %v", s.err)
	case <-time.After(10 * time.Second):
		return 0, errors.New("no echo within 10s")
	}
}

// chanWriter hands every byte to a channel until its context ends.
// first is closed once the first byte is in the channel.
type chanWriter struct {
	ctx   context.Context
	c     chan byte
	first chan struct{}
	once  sync.Once
}

func (w *chanWriter) Write(p []byte) (int, error) {
	for i, b := range p {
		select {
		case w.c <- b:
			w.once.Do(func() { close(w.first) })
		case <-w.ctx.Done():
			return i, w.ctx.Err()
		}
	}
	return len(p), nil
}

// idleSession is a `cat` without a tty that has echoed one line and now
// waits for input that never comes.
type idleSession = live

// openIdle opens one idle session and returns once its line came back, so
// that the session is known to be live end to end.
func openIdle(p path, line string) (*idleSession, error) {
	out := &waitWriter{want: []byte(line), seen: make(chan struct{})}
	s, err := startLive(p, func(_ context.Context, stdin io.Reader) session {
		return session{Command: []string{"cat"}, Stdin: stdin, Stdout: out}
	})
	if err != nil {
		return nil, err
	}
	// The pipe write returns once client-go has taken the line.
	go s.stdin.Write([]byte(line))
	if err := s.await(p, out.seen, 60*time.Second, "its echo came back"); err != nil {
		return nil, err
	}
	return s, nil
}

// warmUp opens n idle sessions at once over p and closes them: what the
// first sessions allocate once (the exec client, pools, connections kept
// alive toward the backend after the pod lookups) is the baseline, not a
// per-session cost.
func warmUp(p path, n int) error {
	warm, err := openIdleSessions(p, n, n)
	if err != nil {
		return err
	}
	return closeIdleSessions(warm)
}

// openIdleSessions opens n idle sessions, parallel at a time.
func openIdleSessions(p path, n, parallel int) ([]*idleSession, error) {
	out := make([]*idleSession, n)
	errs := make([]error, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i], errs[i] = openIdle(p, fmt.Sprintf("idle-%d\n", i))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeIdleSessions(out)
		return nil, err
	}
	return out, nil
}

func closeIdleSessions(ss []*idleSession) error {
	errs := make([]error, len(ss))
	var wg sync.WaitGroup
	for i, s := range ss {
		if s != nil {
			wg.Go(func() { errs[i] = s.close() })
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitWriter keeps what is written and signals once it holds want.
type waitWriter struct {
	mu   sync.Mutex
	want []byte
	buf  []byte
	seen chan struct{}
	done bool
}

func (w *waitWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if !w.done && bytes.Contains(w.buf, w.want) {
		w.done = true
		close(w.seen)
	}
	return len(p), nil
}
