package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// idleRun opens n idle sessions over p and returns the growth of proc (the
// relay or a proxy) per session. With px (proc is that proxy) it also
// reads the Go heap and goroutines from /metrics, and checks that the
// goroutines return to their count once the sessions are closed.
func idleRun(b *testing.B, e *env, p path, n int, proc *testenv.Proxy, px *proxyProc) (idleFigures, error) {
	var f idleFigures
	// An earlier run's processes still being killed would compete with
	// these sessions for the backend (1,000 of them take 15-30 s to go on
	// a loaded machine); they are waited for, within a bound, and
	// whatever is left is told apart below.
	drained := time.Now()
	left := 0
	_ = poll.Until(context.Background(), 200*time.Millisecond, 2*time.Minute, func(context.Context) error {
		if left = len(e.backend.children()); left > 0 {
			return fmt.Errorf("%d left", left) // the backend announces no exit
		}
		return nil
	})
	if d := time.Since(drained); d > time.Second || left > 0 {
		b.Logf("%s: waited %v for earlier sessions' backend processes to end, %d left", p.name(), d.Round(time.Millisecond), left)
	}
	err := warmUp(p, *idleParallel)
	if err != nil {
		return f, err
	}
	var g0 int
	if px != nil {
		if g0, err = px.settledGoroutines(30 * time.Second); err != nil {
			return f, err
		}
	}
	rss0, err := proc.RSSKiB()
	if err != nil {
		return f, err
	}
	fd0, _ := proc.FDs()
	var heap0 float64
	if px != nil {
		heap0, _ = px.Metric("go_memstats_heap_inuse_bytes")
	}
	// The processes of this run are told apart from any still ending from
	// an earlier run by identity, not by counting: a process that exits
	// while these sessions open would otherwise cancel one of them out.
	before := e.backend.children()

	start := time.Now()
	var sessions []*idleSession
	open := func() { sessions, err = openIdleSessions(p, n, *idleParallel) }
	if px != nil {
		// With -proxy.profile: the heap profile is written with the
		// sessions open.
		px.profiled(b, open)
	} else {
		open()
	}
	if err != nil {
		return f, err
	}
	f.opened = time.Since(start)
	rss1, err := proc.RSSKiB()
	if err != nil {
		closeIdleSessions(sessions)
		return f, err
	}
	fd1, _ := proc.FDs()
	var g1 int
	var heap1 float64
	if px != nil {
		g1, _ = px.Goroutines()
		heap1, _ = px.Metric("go_memstats_heap_inuse_bytes")
	}
	now := e.backend.children()
	fresh := newChildren(before, now)
	if err := closeIdleSessions(sessions); err != nil {
		return f, fmt.Errorf("closing idle sessions: %w", err)
	}
	if fresh < n {
		return f, fmt.Errorf("backend runs %d processes started with the %d sessions open (%d before, %d of those still running)",
			fresh, n, len(before), len(before)+fresh-len(now))
	}
	var g2 int
	if px != nil {
		if g2, err = px.WaitGoroutines(g0, 2*time.Minute); err != nil {
			return f, err
		}
		if g2 > g0 {
			b.Errorf("%s: goroutines %d before, %d with %d sessions open, still %d 2 min after they closed", p.name(), g0, g1, n, g2)
		}
	}
	if len(before) > 0 {
		// Processes of earlier sessions still running is the backend's or
		// the earlier proxy's slowness, not this measurement's: say so.
		b.Logf("%s: %d backend processes of earlier sessions (the warm-up's included) were still running when these opened", p.name(), len(before))
	}
	nf := float64(n)
	f.rssKiB = float64(rss1-rss0) / nf
	f.heapKiB = (heap1 - heap0) / 1024 / nf
	f.goroutines = float64(g1-g0) / nf
	f.fds = float64(fd1-fd0) / nf
	b.Logf("%s: %d idle sessions opened in %v; RSS %d -> %d KiB, goroutines %d -> %d -> %d, fds %d -> %d",
		p.name(), n, f.opened.Round(time.Millisecond), rss0, rss1, g0, g1, g2, fd0, fd1)
	return f, nil
}

// settledGoroutines waits until the proxy's goroutine count reads the
// same three times in a row, 100 ms apart (sessions end asynchronously in
// another process), and returns it.
func (p *proxyProc) settledGoroutines(within time.Duration) (int, error) {
	last, same := -1, 0
	err := poll.Until(context.Background(), 100*time.Millisecond, within, func(context.Context) error {
		n, err := p.Goroutines()
		if err != nil {
			last, same = -1, 0
			return err // a busy proxy answering late is retried until the deadline
		}
		if n == last {
			same++
		} else {
			last, same = n, 1
		}
		if same < 3 {
			return fmt.Errorf("%d goroutines, %d reading(s) in a row", n, same)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("proxy goroutines did not settle within %v: %w", within, err)
	}
	return last, nil
}
