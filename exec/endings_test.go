package exec

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testnet"
)

// A connection to the backend cut under a live session is a failure on
// every transport: v4 and v5 backends always send a status, so an error
// stream that ends empty is no success (client-go's SPDY path reads it as
// one).
func TestCutUpstreamIsFailure(t *testing.T) {
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		cut := testnet.NewCutter(t, strings.TrimPrefix(cfg.Host, "http://"))
		d := dialer(t, &rest.Config{Host: "http://" + cut.Addr()}, tr)
		ctx := testenv.Context(t, 30*time.Second)
		out := newSyncBuf()
		done := streamAsync(ctx, d, Target{Namespace: "default", Pod: "demo",
			Command: []string{"sh", "-c", "echo up; exec sleep 600"}, Stdout: true}, Streams{Stdout: out})
		if _, err := out.waitFor(ctx, func(s string) bool { return s == "up\n" }); err != nil {
			t.Fatal(err)
		}
		cut.Cut()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("Stream returned nil (success) after the connection to the backend was cut")
			}
			t.Logf("Stream: %v", err)
		case <-ctx.Done():
			t.Fatal("Stream did not return after the cut")
		}
	})
}

// endless is stdin that never runs dry; it counts what was taken.
type endless struct{ n atomic.Int64 }

func (e *endless) Read(p []byte) (int, error) { clear(p); e.n.Add(int64(len(p))); return len(p), nil }

// waitBlocked returns once nobody has read from e for 300 ms: every buffer
// between it and a process that does not read is full. (Polling: the
// blocked reader is in client-go, where no event says so.)
func (e *endless) waitBlocked(t *testing.T) {
	t.Helper()
	last, since := e.n.Load(), time.Now()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if n := e.n.Load(); n != last {
			last, since = n, time.Now()
		} else if n > 0 && time.Since(since) > 300*time.Millisecond {
			return
		}
	}
	t.Fatalf("stdin never blocked (%d bytes taken)", last)
}

// Cancelling a session whose stdin is blocked (the process never reads it
// and the client keeps sending) ends it at once on every transport:
// spdystream's polite close waits on the lock the blocked stdin copy holds.
func TestCancelWithStdinBlocked(t *testing.T) {
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		ctx, cancel := context.WithCancel(testenv.Context(t, 30*time.Second))
		defer cancel()
		out := newSyncBuf()
		in := &endless{}
		done := streamAsync(ctx, dialer(t, cfg, tr), Target{Namespace: "default", Pod: "demo",
			Command: []string{"sh", "-c", "echo $$; exec sleep 600"}, Stdin: true, Stdout: true},
			Streams{Stdin: in, Stdout: out})
		line, err := out.waitFor(ctx, func(s string) bool { return strings.HasSuffix(s, "\n") })
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		if _, err := fmt.Sscan(line, &pid); err != nil {
			t.Fatal(err)
		}
		in.waitBlocked(t)
		cancel()
		wantCanceled(t, done, 3*time.Second)
		poll.Gone(t, 3*time.Second, pid)
	})
}
