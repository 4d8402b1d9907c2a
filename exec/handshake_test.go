package exec

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// stuckUpstream accepts connections, reads each request's head and then
// either sends nothing (silent) or a refusal whose body never comes
// (refusing: a Content-Length it does not honour, and no close). It
// reports each request it has read, and holds every connection until the
// test ends.
type stuckUpstream struct {
	ln       net.Listener
	refusing bool
	requests chan string // the Upgrade header of each request read
	mu       sync.Mutex
	conns    []net.Conn
}

func newStuckUpstream(t *testing.T, refusing bool) *stuckUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &stuckUpstream{ln: ln, refusing: refusing, requests: make(chan string, 16)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns = append(u.conns, c)
			u.mu.Unlock()
			wg.Go(func() { u.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for _, c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		wg.Wait()
	})
	return u
}

func (u *stuckUpstream) serve(c net.Conn) {
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	if u.refusing {
		_, _ = c.Write([]byte("HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 4096\r\n\r\nforbidden: "))
	}
	u.requests <- req.Header.Get("Upgrade") + req.Header.Get("Sec-Websocket-Protocol") + req.Header.Get("X-Stream-Protocol-Version")
	_, _ = c.Read(make([]byte, 1)) // until the client or the cleanup closes it
}

// An upstream that never finishes its handshake (no answer, or a refusal
// whose body never ends: gorilla reads it to the end) holds neither a
// session that ends nor, past the handshake bound, one that does not: every
// transport, through Stream and StreamFrames.
func TestHandshakeThatNeverEnds(t *testing.T) {
	streams := map[string]func(*Dialer, context.Context, Target, Streams) (Result, error){
		"Stream":       (*Dialer).Stream,
		"StreamFrames": (*Dialer).StreamFrames,
	}
	for _, refusing := range []bool{false, true} {
		upstream := "silent"
		if refusing {
			upstream = "refusing"
		}
		t.Run(upstream, func(t *testing.T) {
			for name, stream := range streams {
				t.Run(name, func(t *testing.T) {
					eachTransport(t, func(t *testing.T, tr Transport) {
						testStuckHandshake(t, refusing, tr, stream)
					})
				})
			}
		})
	}
}

func testStuckHandshake(t *testing.T, refusing bool, tr Transport, stream func(*Dialer, context.Context, Target, Streams) (Result, error)) {
	up := newStuckUpstream(t, refusing)
	d := dialer(t, &rest.Config{Host: "http://" + up.ln.Addr().String()}, tr)
	const bound = 300 * time.Millisecond
	d.SetHandshakeTimeout(bound)
	tgt := Target{Namespace: "default", Pod: "demo", Command: []string{"true"}, Stdout: true}
	run := func(ctx context.Context) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := stream(d, ctx, tgt, Streams{Stdout: newSyncBuf()})
			done <- err
		}()
		return done
	}
	waitRequest := func(ctx context.Context) {
		t.Helper()
		select {
		case <-up.requests:
		case <-ctx.Done():
			t.Fatal("the upstream never got the upgrade request")
		}
	}

	t.Run("cancelled", func(t *testing.T) {
		outer := testenv.Context(t, 30*time.Second)
		ctx, cancel := context.WithCancel(outer)
		done := run(ctx)
		waitRequest(outer)
		cancel()
		wantCanceled(t, done, 2*time.Second)
	})

	t.Run("bounded", func(t *testing.T) {
		ctx := testenv.Context(t, 30*time.Second)
		start := time.Now()
		done := run(ctx)
		waitRequest(ctx)
		select {
		case err := <-done:
			if !errors.Is(err, ErrUpgradeTimeout) {
				t.Errorf("Stream returned %v, want ErrUpgradeTimeout", err)
			}
			t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
		case <-time.After(5 * time.Second):
			t.Fatalf("Stream still dialling %v after the start, with a handshake bound of %v", time.Since(start).Round(time.Millisecond), bound)
		}
	})
}
