//go:build load

package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
)

var massDropSessions = flag.Int("load.drop", 2000, "sessions TestLoadMassDrop opens and drops at once")

// TestLoadMassDrop is issue 11 item 11 as reported: 2,000 SPDY sessions
// whose processes never read stdin (so no stdin EOF can end them: only the
// proxy tearing the upstream exec down can), every client dropped at once.
// Every backend process must be gone within massDropBound and the proxy
// must count no active session. Part of make load (-run TestLoad).
func TestLoadMassDrop(t *testing.T) {
	e := newEnv(t)
	n := *massDropSessions
	p := e.startProxy(t, exec.TransportSPDY, "--max-sessions", strconv.Itoa(n+64))
	pp := p.path(e)
	start := time.Now()
	ss, err := openSleepers(pp, n, 64)
	if err != nil {
		t.Fatalf("opening %d sessions: %v", n, err)
	}
	fmt.Printf("\nk8s-ws-proxy mass drop: %d SPDY sessions of `sleep` (stdin open, never read) opened in %v\n",
		n, time.Since(start).Round(time.Millisecond))
	dropAll(t, e, p, ss, "sleep")
}

// openSleepers opens n sessions of a process that prints one line and then
// sleeps without reading stdin, parallel at a time (a pool of openers fed
// the session numbers), each returned once its line came back.
func openSleepers(p path, n, parallel int) ([]*idleSession, error) {
	out := make([]*idleSession, n)
	next := make(chan int)
	results := make(chan error, parallel)
	for range parallel {
		go func() {
			var errs []error
			for i := range next {
				var err error
				out[i], err = openSleeper(p, i)
				errs = append(errs, err)
			}
			results <- errors.Join(errs...)
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	errs := make([]error, 0, parallel)
	for range parallel {
		errs = append(errs, <-results)
	}
	if err := errors.Join(errs...); err != nil {
		closeIdleSessions(out)
		return nil, err
	}
	return out, nil
}

func openSleeper(p path, i int) (*idleSession, error) {
	name := fmt.Sprintf("sleeper-%d", i)
	stdinR, stdinW := io.Pipe() // held open, never written
	ready := &waitWriter{want: []byte(name + "\n"), seen: make(chan struct{})}
	run, err := p.prepare(session{Command: []string{"sh", "-c", "echo " + name + "; exec sleep 600"}, Stdin: stdinR, Stdout: ready})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &idleSession{stdin: stdinW, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = run(ctx)
		stdinW.Close()
	}()
	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	select {
	case <-ready.seen:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("%s: %s ended before its line: %v", p.name(), name, s.err)
	case <-timeout.C:
		s.close()
		return nil, fmt.Errorf("%s: no line from %s within a minute", p.name(), name)
	}
}
