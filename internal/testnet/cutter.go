// Package testnet holds network fixtures for tests.
package testnet

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Cutter forwards TCP on loopback to a target until Cut, as a node losing its
// API server connection would.
type Cutter struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// NewCutter starts forwarding; the test's cleanup cuts every connection and
// waits for the forwarding goroutines, so goleak stays clean.
func NewCutter(t testing.TB, target string) *Cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &Cutter{ln: ln}
	var wg sync.WaitGroup
	wg.Go(func() {
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
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			wg.Go(func() { io.Copy(out, in); out.Close() })
			wg.Go(func() { io.Copy(in, out); in.Close() })
		}
	})
	t.Cleanup(func() { ln.Close(); c.Cut(); wg.Wait() })
	return c
}

// Addr is the host:port to dial instead of the target.
func (c *Cutter) Addr() string { return c.ln.Addr().String() }

// Cut closes every connection forwarded so far; new ones are still accepted.
func (c *Cutter) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.conns {
		x.Close()
	}
	c.conns = nil
}
