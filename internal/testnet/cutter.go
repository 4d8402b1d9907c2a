// Package testnet holds network fixtures for tests.
package testnet

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Options shape what a Relay does to the bytes it forwards.
type Options struct {
	// Rate bounds the bytes per second sent toward the target (an upload
	// a test wants to stop midway); 0 does not bound it.
	Rate int
	// Idle closes a connection that carried no byte either way for this
	// long, as cloud load balancers do; 0 never does.
	Idle time.Duration
}

// Relay forwards TCP on loopback to a target: a node losing its API server
// connection (Cut), a slow link (Rate), an idle-dropping middlebox (Idle).
type Relay struct {
	ln      net.Listener
	opts    Options
	mu      sync.Mutex
	conns   []net.Conn
	up      atomic.Int64
	dropped atomic.Int32
	wg      sync.WaitGroup
}

// Cutter is a Relay used for Cut.
type Cutter = Relay

// NewCutter is NewRelay without options.
func NewCutter(t testing.TB, target string) *Cutter { return NewRelay(t, target, Options{}) }

// NewRelay starts forwarding; the test's cleanup cuts every connection and
// waits for the forwarding goroutines, so goleak stays clean.
func NewRelay(t testing.TB, target string, opts Options) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln, opts: opts}
	r.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, in, out)
			r.mu.Unlock()
			r.forward(in, out)
		}
	})
	t.Cleanup(func() { ln.Close(); r.Cut(); r.wg.Wait() })
	return r
}

func (r *Relay) forward(in, out net.Conn) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var pipes sync.WaitGroup
	pipes.Go(func() { r.pipe(out, in, true, &last) })
	pipes.Go(func() { r.pipe(in, out, false, &last) })
	done := make(chan struct{})
	r.wg.Go(func() { pipes.Wait(); close(done) })
	if r.opts.Idle <= 0 {
		return
	}
	r.wg.Go(func() {
		tick := time.NewTicker(r.opts.Idle / 10)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if time.Since(time.Unix(0, last.Load())) > r.opts.Idle {
				r.dropped.Add(1)
				in.Close()
				out.Close()
				return
			}
		}
	})
}

// pipe copies src to dst until either ends, then closes dst.
func (r *Relay) pipe(dst, src net.Conn, up bool, last *atomic.Int64) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if up {
				r.up.Add(int64(n))
				if r.opts.Rate > 0 {
					time.Sleep(time.Duration(n) * time.Second / time.Duration(r.opts.Rate))
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// Addr is the host:port to dial instead of the target.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Up is how many bytes went toward the target.
func (r *Relay) Up() int64 { return r.up.Load() }

// Dropped is how many connections Idle closed.
func (r *Relay) Dropped() int32 { return r.dropped.Load() }

// Cut closes every connection forwarded so far; new ones are still accepted.
func (r *Relay) Cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.conns {
		x.Close()
	}
	r.conns = nil
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
// Another process may take one before the caller binds it: retry with new
// ports when that happens.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
