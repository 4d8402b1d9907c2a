package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// mintWith signs a token for ns/pod container c running command.
func (h *harness) mintWith(mod func(*hmac.Claims), command ...string) string {
	h.t.Helper()
	now := time.Now()
	c := hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
		Namespace:        "ns", Pod: "pod", Container: "c", Command: command,
	}
	if mod != nil {
		mod(&c)
	}
	tok, err := h.signer.Sign(c)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// try sends one upgrade request and returns the status, the body of a
// refusal, and the connection of an upgrade.
func (h *harness) try(path string, header http.Header, protocols ...string) (int, string, *websocket.Conn) {
	h.t.Helper()
	if len(protocols) == 0 {
		protocols = []string{ProtocolV5}
	}
	d := websocket.Dialer{Subprotocols: protocols, HandshakeTimeout: 20 * time.Second}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(h.url, "http")+path, header)
	if err == nil {
		h.t.Cleanup(func() { ws.Close() })
		return resp.StatusCode, "", ws
	}
	if resp == nil {
		h.t.Fatalf("no response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func bearerHeader(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

const execPath = "/api/v1/namespaces/ns/pods/pod/exec"

// flakyPods fails the first lookups, then asks the real backend.
type flakyPods struct {
	PodGetter
	failures atomic.Int32
	err      error
}

func (f *flakyPods) GetPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, f.err
	}
	return f.PodGetter.GetPod(ctx, ns, name)
}

// TestRefusalDoesNotSpendToken: a request refused for anything but the
// token itself (scope, a failed pod lookup, the session limit) leaves the
// token usable; only the upgrade spends it.
func TestRefusalDoesNotSpendToken(t *testing.T) {
	pods := &flakyPods{err: errors.New(`Get "http://127.0.0.1:38443/api/v1/namespaces/ns/pods/pod": dial tcp 127.0.0.1:38443: connect: connection refused`)}
	h := newHarness(t, func(c *Config) {
		pods.PodGetter = c.Pods
		c.Pods = pods
		c.MaxSessions = 1
	})
	tok := h.mintWith(nil, "true")

	// Scope: the namespace in the path is not the token's.
	if st, body, _ := h.try("/api/v1/namespaces/other/pods/pod/exec?command=true", bearerHeader(tok)); st != http.StatusForbidden {
		t.Fatalf("wrong namespace: status %d %s", st, body)
	}
	// The pod lookup fails (the API server is unreachable).
	pods.failures.Store(1)
	if st, body, _ := h.try(execPath+"?command=true", bearerHeader(tok)); st != http.StatusBadGateway {
		t.Fatalf("failed lookup: status %d %s", st, body)
	}
	// The proxy is full.
	busy := h.mintWith(func(c *hmac.Claims) { c.Stdin = true }, "cat")
	st, body, live := h.try(execPath+"?command=cat", bearerHeader(busy))
	if st != http.StatusSwitchingProtocols {
		t.Fatalf("live session: %d %s", st, body)
	}
	if st, body, _ := h.try(execPath+"?command=true", bearerHeader(tok)); st != http.StatusServiceUnavailable {
		t.Fatalf("full proxy: status %d %s", st, body)
	}
	live.WriteMessage(websocket.BinaryMessage, []byte{chanClose, chanStdin})
	readAll(t, live, DefaultMaxFrameSize, binaryFrame)
	for deadline := time.Now().Add(20 * time.Second); h.srv.ActiveSessions() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("live session did not end")
		}
	}

	// After all that, the token still opens its session, once.
	if st, body, ws := h.try(execPath+"?command=true", bearerHeader(tok)); st != http.StatusSwitchingProtocols {
		t.Fatalf("token refused after refusals that were not its fault: %d %s", st, body)
	} else {
		ws.Close()
	}
	if st, body, _ := h.try(execPath+"?command=true", bearerHeader(tok)); st != http.StatusUnauthorized || !strings.Contains(body, "replayed") {
		t.Fatalf("second use: %d %s", st, body)
	}
}

// TestConcurrentUsesOneUpgrade: 50 simultaneous uses of one token open
// exactly one session; the others get 401 replayed.
func TestConcurrentUsesOneUpgrade(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.mintWith(nil, "true")
	var upgrades, replayed atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			d := websocket.Dialer{Subprotocols: []string{ProtocolV5}, HandshakeTimeout: 30 * time.Second}
			ws, resp, err := d.Dial("ws"+strings.TrimPrefix(h.url, "http")+execPath+"?command=true", bearerHeader(tok))
			switch {
			case err == nil:
				upgrades.Add(1)
				ws.Close()
			case resp != nil && resp.StatusCode == http.StatusUnauthorized:
				replayed.Add(1)
			default:
				t.Errorf("dial: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if upgrades.Load() != 1 || replayed.Load() != 49 {
		t.Fatalf("%d upgrades and %d replayed of 50, want 1 and 49", upgrades.Load(), replayed.Load())
	}
}
