//go:build load

package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"sync"
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
// sleeps without reading stdin, parallel at a time, each returned once its
// line came back.
func openSleepers(p path, n, parallel int) ([]*idleSession, error) {
	out := make([]*idleSession, n)
	errs := make([]error, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i], errs[i] = openSleeper(p, fmt.Sprintf("sleeper-%d", i))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeIdleSessions(out)
		return nil, err
	}
	return out, nil
}

func openSleeper(p path, line string) (*idleSession, error) {
	ctx, cancel := context.WithCancel(context.Background())
	stdinR, stdinW := io.Pipe()
	w := &waitWriter{want: []byte(line + "\n"), seen: make(chan struct{})}
	s := &idleSession{stdin: stdinW, cancel: cancel, done: make(chan struct{})}
	run, err := p.prepare(session{
		Command: []string{"sh", "-c", "echo " + line + "; exec sleep 600"},
		Stdin:   stdinR, Stdout: w,
	})
	if err != nil {
		cancel()
		return nil, err
	}
	go func() {
		s.err = run(ctx)
		stdinW.Close()
		close(s.done)
	}()
	select {
	case <-w.seen:
		return s, nil
	case <-s.done:
		cancel()
		return nil, fmt.Errorf("%s: session ended before its line: %v", p.name(), s.err)
	case <-time.After(60 * time.Second):
		s.close()
		return nil, fmt.Errorf("%s: no line within 60s", p.name())
	}
}
