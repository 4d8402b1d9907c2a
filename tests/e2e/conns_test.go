package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// keepAlive is one raw HTTP/1.1 connection that sends requests and keeps
// the connection open between them.
type keepAlive struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAlive {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{t: t, conn: c, r: bufio.NewReader(c)}
}

// get sends GET path and returns the status, or an error if the server
// closed the connection instead of answering.
func (k *keepAlive) get(path string) (int, error) {
	k.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(k.conn, "GET "+path+" HTTP/1.1\r\nHost: proxy\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// closedByServer waits for the server to close the connection.
func (k *keepAlive) closedByServer(within time.Duration) error {
	k.conn.SetReadDeadline(time.Now().Add(within))
	_, err := k.r.ReadByte()
	return err
}

// TestIdleConnectionsAreClosed: a keep-alive connection left idle after a
// cheap request is closed after --http-idle-timeout, on both listeners.
func TestIdleConnectionsAreClosed(t *testing.T) {
	e := startEnv(t, envOptions{extraArgs: []string{"--http-idle-timeout", "1s"}})
	for name, addr := range map[string]string{"session": e.Addr, "health": e.Health} {
		k := dialKeepAlive(t, addr)
		if st, err := k.get("/healthz"); err != nil || st != http.StatusOK {
			t.Fatalf("%s port /healthz: %d %v", name, st, err)
		}
		if st, err := k.get("/healthz"); err != nil || st != http.StatusOK {
			t.Fatalf("%s port: the connection was not kept alive: %d %v", name, st, err)
		}
		start := time.Now()
		if err := k.closedByServer(15 * time.Second); err != io.EOF {
			t.Fatalf("%s port: idle connection not closed by the server: %v", name, err)
		}
		if d := time.Since(start); d < 500*time.Millisecond {
			t.Fatalf("%s port: closed after %s, before the idle timeout", name, d)
		}
	}
}

// TestPendingConnectionsCapped: at most --max-pending-connections
// connections that are not sessions are held per listener; a new one past
// the limit is served and the oldest is closed (logged and counted), so
// stalled connections cannot lock real clients out; upgraded sessions do
// not count.
func TestPendingConnectionsCapped(t *testing.T) {
	const limit = 5
	e := startEnv(t, envOptions{extraArgs: []string{"--max-pending-connections", "5"}})
	// Sessions above the limit: upgraded connections leave the count.
	var sessions []*rawSession
	for range limit + 1 {
		sessions = append(sessions, e.openCat(t, "v5.channel.k8s.io", false))
	}
	var held []*keepAlive
	for i := range limit {
		k := dialKeepAlive(t, e.Addr)
		if st, err := k.get("/healthz"); err != nil || st != http.StatusOK {
			t.Fatalf("connection %d of %d: %d %v", i+1, limit, st, err)
		}
		held = append(held, k)
	}
	// One more is served, and the oldest idle one is closed to make room.
	extra := dialKeepAlive(t, e.Addr)
	if st, err := extra.get("/healthz"); err != nil || st != http.StatusOK {
		t.Fatalf("connection %d past the limit: %d %v", limit+1, st, err)
	}
	if err := held[0].closedByServer(15 * time.Second); err != io.EOF {
		t.Fatalf("the oldest connection was not closed at the limit: %v", err)
	}
	for i, k := range held[1:] {
		if st, err := k.get("/healthz"); err != nil || st != http.StatusOK {
			t.Fatalf("connection %d was closed too: %d %v", i+2, st, err)
		}
	}
	for _, s := range sessions {
		s.echo("still-here")
	}
	e.WaitLog(10*time.Second, "connection evicted", func(m map[string]any) bool {
		return m["reason"] == "too_many_connections" && m["server"] == "sessions"
	})
	if m := e.metrics(t); !strings.Contains(m, `k8s_ws_proxy_connections_evicted_total{`) || !strings.Contains(m, `server="sessions"`) {
		t.Fatalf("/metrics does not count the closed connection")
	}
}

// TestHealthEndpoints: /healthz and /readyz on both listeners, over HTTP
// against the binary: ready with a key, 503 with none.
func TestHealthEndpoints(t *testing.T) {
	e := startEnv(t, envOptions{})
	for _, addr := range []string{e.Addr, e.Health} {
		for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want || strings.TrimSpace(string(b)) != "ok" {
				t.Errorf("%s%s: %d %q", addr, path, resp.StatusCode, b)
			}
		}
	}

	// No key at all: alive, not ready, and saying why.
	empty := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	testenv.WriteKubeconfig(t, kubeconfig, "http://127.0.0.1:1")
	var p *testenv.Proxy
	t.Cleanup(func() {
		if p != nil {
			assertJSONLog(t, p)
		}
	})
	p = testenv.StartProxy(t, testenv.ProxyOptions{Bin: proxyBin, Args: testenv.ServeArgs(empty, kubeconfig, testNode, "auto")})
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503} {
		resp, err := http.Get("http://" + p.Health + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("no key: %s: %d %q, want %d", path, resp.StatusCode, b, want)
		}
		if want == 503 && !strings.Contains(string(b), "no valid HMAC key loaded") {
			t.Errorf("no key: /readyz says %q", b)
		}
	}
}

// TestRejectionFloodBoundedLog: 5,000 anonymous refusals write a bounded
// number of log lines; the metrics count every refusal and every line held
// back.
func TestRejectionFloodBoundedLog(t *testing.T) {
	e := startEnv(t, envOptions{})
	const n = 5000
	mark := e.LogMark()
	elapsed := testenv.GetFlood(t, "http://"+e.Addr+"/api/v1/namespaces/"+testNamespace+"/pods/"+testPod+"/exec?command=sh", n, http.StatusBadRequest)
	waitFor(t, 10*time.Second, "the metrics count every refusal", func() bool {
		v, err := e.Metric(`k8s_ws_proxy_rejections_total`)
		return err == nil && v >= n
	})
	lines := 0
	for _, m := range e.LogLines("session rejected") {
		if m["reason"] == "not_websocket" {
			lines++
		}
	}
	// A burst of 20, then one a second.
	if limit := 20 + int(elapsed/time.Second) + 1; lines > limit || lines == 0 {
		t.Fatalf("%d refusals in %s wrote %d lines (%d lines in all since the flood began), want at most %d", n, elapsed, lines, e.LogMark()-mark, limit)
	}
	m := e.metrics(t)
	want := `k8s_ws_proxy_log_suppressed_total{`
	i := strings.Index(m, want)
	if i < 0 || !strings.Contains(m[i:], `reason="not_websocket"`) {
		t.Fatalf("/metrics lacks %s reason=\"not_websocket\"", want)
	}
	// One reason was suppressed, so the first series is its.
	if v, err := testenv.ParseMetric(m, "k8s_ws_proxy_log_suppressed_total"); err != nil || int(v) != n-lines {
		t.Fatalf("suppressed %v (%v), want %d", v, err, n-lines)
	}
	t.Logf("%d refusals in %s: %d log lines", n, elapsed.Round(time.Millisecond), lines)
}
