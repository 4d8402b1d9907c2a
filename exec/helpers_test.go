package exec

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/rest"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/localexec"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// spdystream's shutdown holds a close error for up to its close
		// timeout (at least 1 s) when nobody reads it, then exits.
		goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Connection).shutdown"),
		// klog starts its flush daemon in init; it lives for the process.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		// client-go's WebSocket ping loop stops on a close frame or at its
		// first failed ping, up to one ping period (5 s) after a connection
		// that ended without a close frame (the cancel tests).
		goleak.IgnoreTopFunction("k8s.io/client-go/tools/remotecommand.(*heartbeat).start"),
	)
}

// backend starts a localexec server on loopback and returns a rest.Config
// pointing at it, as a kubeconfig would point at an API server.
func backend(t *testing.T) (*rest.Config, *localexec.Server) {
	t.Helper()
	srv, err := localexec.NewServer(localexec.Config{
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Pods: []localexec.Pod{
			{Namespace: "default", Name: "demo", NodeName: "node-a", Containers: []localexec.Container{{Name: "shell"}}},
			{Namespace: "team", Name: "two", NodeName: "node-b", Containers: []localexec.Container{
				{Name: "app", Entrypoint: []string{"/bin/sh", "-c", "echo attached to app; cat"}},
				{Name: "side", Env: []string{"GREETING=hi from side"}},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
	})
	return &rest.Config{Host: hs.URL}, srv
}

func dialer(t *testing.T, cfg *rest.Config, tr Transport) *Dialer {
	t.Helper()
	d, err := NewDialer(cfg, tr)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// expectTransport is what carries a session to localexec: it has no v5,
// so auto's v5-only WebSocket upgrade is refused and it falls back to SPDY,
// while the forced WebSocket transport negotiates v4.
func expectTransport(tr Transport) Transport {
	if tr == TransportAuto {
		return TransportSPDY
	}
	return tr
}

var allTransports = []Transport{TransportWebSocket, TransportSPDY, TransportAuto}

// syncBuf is a goroutine-safe buffer whose waiters wake on every write.
type syncBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newSyncBuf() *syncBuf { return &syncBuf{changed: make(chan struct{})} }

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	close(s.changed)
	s.changed = make(chan struct{})
	return len(p), nil
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the content satisfies ok, returning the content.
func (s *syncBuf) waitFor(ctx context.Context, ok func(string) bool) (string, error) {
	for {
		s.mu.Lock()
		str, ch := s.b.String(), s.changed
		s.mu.Unlock()
		if ok(str) {
			return str, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return str, ctx.Err()
		}
	}
}

// streamAsync runs d.Stream in a goroutine; the channel gets its error.
func streamAsync(ctx context.Context, d *Dialer, tgt Target, s Streams) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := d.Stream(ctx, tgt, s)
		done <- err
	}()
	return done
}

// wantCanceled waits up to within for a cancelled Stream's error, which
// must be context.Canceled.
func wantCanceled(t *testing.T, done <-chan error, within time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Stream returned %v, want context.Canceled", err)
		}
	case <-time.After(within):
		t.Fatalf("Stream did not return within %s of the cancel", within)
	}
}

// eachTransport runs f as a subtest for every transport in allTransports.
func eachTransport(t *testing.T, f func(t *testing.T, tr Transport)) {
	t.Helper()
	for _, tr := range allTransports {
		t.Run(string(tr), func(t *testing.T) { f(t, tr) })
	}
}
