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
)

// ended reports whether err is how a session ends when its client cancels
// it (the client going away, as guacd does) or a clean exit.
func ended(err error) bool { return err == nil || errors.Is(err, context.Canceled) }

// bulkOnce runs `head -c size /dev/zero` without a tty and returns the
// time from dial to the end of the session.
func bulkOnce(p path, size int64) (time.Duration, error) {
	out := &countWriter{}
	errw := newFirstByte()
	run, err := p.prepare(session{
		Command: []string{"head", "-c", strconv.FormatInt(size, 10), "/dev/zero"},
		Stdout:  out, Stderr: errw,
	})
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

// echoSession is a live tty session echoing every byte sent to it.
type echoSession struct {
	stdin  *io.PipeWriter
	out    chan byte
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func openEcho(p path) (*echoSession, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stdinR, stdinW := io.Pipe()
	s := &echoSession{stdin: stdinW, out: make(chan byte, 64), cancel: cancel, done: make(chan struct{})}
	run, err := p.prepare(session{
		Command: []string{"sh", "-c", echoScript}, TTY: true,
		Stdin: stdinR, Stdout: &chanWriter{ctx: ctx, c: s.out}, Sizes: newSizes(ctx, 80, 24),
	})
	if err != nil {
		cancel()
		return nil, err
	}
	go func() {
		s.err = run(ctx)
		// client-go may still be reading stdin; make it return.
		stdinW.Close()
		close(s.done)
	}()
	select {
	case c := <-s.out:
		if c != 'R' {
			s.close()
			return nil, fmt.Errorf("%s: first output byte %q, want 'R'", p.name(), c)
		}
		return s, nil
	case <-s.done:
		cancel()
		return nil, fmt.Errorf("%s: echo session ended before it was ready: %v", p.name(), s.err)
	case <-time.After(30 * time.Second):
		s.close()
		return nil, fmt.Errorf("%s: echo session not ready within 30s", p.name())
	}
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

func (s *echoSession) close() error {
	s.cancel()
	<-s.done
	if !ended(s.err) {
		return s.err
	}
	return nil
}

// chanWriter hands every byte to a channel until its context ends.
type chanWriter struct {
	ctx context.Context
	c   chan byte
}

func (w *chanWriter) Write(p []byte) (int, error) {
	for i, b := range p {
		select {
		case w.c <- b:
		case <-w.ctx.Done():
			return i, w.ctx.Err()
		}
	}
	return len(p), nil
}

// idleSession is a `cat` without a tty that has echoed one line and now
// waits for input that never comes.
type idleSession struct {
	stdin  *io.PipeWriter
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// openIdle opens one idle session and returns once its line came back, so
// that the session is known to be live end to end.
func openIdle(p path, line string) (*idleSession, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stdinR, stdinW := io.Pipe()
	out := &waitWriter{want: []byte(line), seen: make(chan struct{})}
	s := &idleSession{stdin: stdinW, cancel: cancel, done: make(chan struct{})}
	run, err := p.prepare(session{Command: []string{"cat"}, Stdin: stdinR, Stdout: out})
	if err != nil {
		cancel()
		return nil, err
	}
	go func() {
		s.err = run(ctx)
		stdinW.Close()
		close(s.done)
	}()
	// The pipe write returns once client-go has taken the line.
	go stdinW.Write([]byte(line))
	select {
	case <-out.seen:
		return s, nil
	case <-s.done:
		cancel()
		return nil, fmt.Errorf("%s: idle session ended before its echo: %v", p.name(), s.err)
	case <-time.After(60 * time.Second):
		s.close()
		return nil, fmt.Errorf("%s: no echo within 60s", p.name())
	}
}

// close ends the session the way a client that goes away does.
func (s *idleSession) close() error {
	s.cancel()
	<-s.done
	if !ended(s.err) {
		return s.err
	}
	return nil
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
