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
	// Buffer sets the kernel send and receive buffers of both sockets of
	// every connection (SO_SNDBUF, SO_RCVBUF), as a middlebox with bounded
	// per-connection buffers has; 0 leaves Linux's autotuning, which grows
	// them to tcp_rmem's maximum (tens of MiB) on loopback.
	Buffer int
}

// Relay forwards TCP on loopback to a target: a node losing its API server
// connection (Cut), a client's connection reset mid-stream (Reset,
// ResetAt), a slow link (Rate), an idle-dropping middlebox (Idle).
type Relay struct {
	ln      net.Listener
	opts    Options
	mu      sync.Mutex
	conns   []net.Conn
	up      atomic.Int64
	down    atomic.Int64
	dropped atomic.Int32
	resets  atomic.Int32
	wg      sync.WaitGroup

	// triggers are the armed ResetAt cuts; armed says whether any is.
	armed    atomic.Bool
	triggers []trigger
}

// trigger is one armed ResetAt.
type trigger struct {
	up   bool
	at   int64
	done chan struct{}
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
			if opts.Buffer > 0 {
				for _, c := range []net.Conn{in, out} {
					if tc, ok := c.(*net.TCPConn); ok {
						_ = tc.SetReadBuffer(opts.Buffer)
						_ = tc.SetWriteBuffer(opts.Buffer)
					}
				}
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
			// Counted before the write: once the peer has the bytes, a
			// test reading Up or Down sees them.
			if up {
				r.up.Add(int64(n))
			} else {
				r.down.Add(int64(n))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if up && r.opts.Rate > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(r.opts.Rate))
			}
			if r.armed.Load() {
				r.fire()
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

// Down is how many bytes came back from the target.
func (r *Relay) Down() int64 { return r.down.Load() }

// Resets is how many ResetAt cuts have fired.
func (r *Relay) Resets() int32 { return r.resets.Load() }

// Cut closes every connection forwarded so far; new ones are still accepted.
func (r *Relay) Cut() { r.cut(false) }

// Reset cuts like Cut but with a TCP RST both ways (SO_LINGER 0), as a
// load balancer or a NAT that lost its state does: the peers see
// ECONNRESET, no FIN and no close frame.
func (r *Relay) Reset() { r.cut(true) }

func (r *Relay) cut(rst bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.conns {
		if tc, ok := x.(*net.TCPConn); ok && rst {
			_ = tc.SetLinger(0)
		}
		x.Close()
	}
	r.conns = nil
}

// ResetAt arms one Reset for when the bytes forwarded toward the target
// (up) or back from it (!up), counted since the Relay started, reach at:
// a cut at a point of the stream's progress, not of time. The channel is
// closed once it has fired.
func (r *Relay) ResetAt(up bool, at int64) <-chan struct{} {
	tr := trigger{up: up, at: at, done: make(chan struct{})}
	r.mu.Lock()
	r.triggers = append(r.triggers, tr)
	r.armed.Store(true)
	r.mu.Unlock()
	r.fire() // it may be due already
	return tr.done
}

// fire resets the connections for every trigger that is due.
func (r *Relay) fire() {
	r.mu.Lock()
	var due []trigger
	keep := r.triggers[:0]
	for _, tr := range r.triggers {
		n := r.down.Load()
		if tr.up {
			n = r.up.Load()
		}
		if n >= tr.at {
			due = append(due, tr)
		} else {
			keep = append(keep, tr)
		}
	}
	r.triggers = keep
	r.armed.Store(len(keep) > 0)
	r.mu.Unlock()
	if len(due) == 0 {
		return
	}
	r.Reset()
	for _, tr := range due {
		r.resets.Add(1)
		close(tr.done)
	}
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
