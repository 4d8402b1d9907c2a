package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// metrics returns the proxy's /metrics text.
func (e *env) metrics(t *testing.T) string {
	t.Helper()
	text, err := e.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// readyz is the status of /readyz on a health port.
func readyz(t *testing.T, health string) int {
	t.Helper()
	resp, err := http.Get("http://" + health + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// goroutines reads the proxy's goroutine count from its /metrics.
func (e *env) goroutines(t *testing.T) int {
	t.Helper()
	n, err := e.Goroutines()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// expectNoLeak waits for the proxy's goroutines to come back to base: a
// session's goroutines end shortly after it does.
func (e *env) expectNoLeak(t *testing.T, base int) {
	t.Helper()
	var n int
	if err := poll.Until(context.Background(), 50*time.Millisecond, 15*time.Second, func(context.Context) error {
		if n = e.goroutines(t); n > base {
			return errors.New("not yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("proxy goroutines %d, %d before the sessions: leak", n, base)
	}
}

func TestFaultBackendUnreachable(t *testing.T) {
	e := startEnv(t, envOptions{backendAddr: "127.0.0.1:1"})
	c := e.claims("sh")
	start := time.Now()
	status, body, ws := e.tryUpgrade(t, upgradeRequest{path: "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?command=sh",
		header: bearer(e.mint(c)), protocols: []string{"v4.channel.k8s.io"}})
	if ws != nil {
		ws.Close()
		t.Fatal("upgraded although the API server is unreachable")
	}
	if status != http.StatusBadGateway || !strings.Contains(body, "looking up pod") {
		t.Fatalf("status %d body %s, want 502 naming the pod lookup", status, body)
	}
	// What failed, not where: the address is for the log.
	if strings.Contains(body, "127.0.0.1") {
		t.Fatalf("the refusal names an internal address: %s", body)
	}
	e.WaitLog(10*time.Second, "session rejected", func(m map[string]any) bool {
		s, _ := m["error"].(string)
		return m["reason"] == "pod_lookup_failed" && strings.Contains(s, "127.0.0.1:1")
	})
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("refusal took %v", d)
	}
}

// baseline warms the proxy up with one session (its connection pool to the
// API server then holds an idle keep-alive connection, which is not a
// leak) and returns its goroutine count.
func (e *env) baseline(t *testing.T) int {
	t.Helper()
	var out bytes.Buffer
	if err := e.clientGoExec(testenv.Context(t, 30*time.Second), protocolSets["v5"], e.claims("echo", "warm-up"),
		remotecommand.StreamOptions{Stdout: &out, Stderr: io.Discard}); err != nil || out.String() != "warm-up\n" {
		t.Fatalf("warm-up session: %v, output %q", err, out.String())
	}
	e.WaitLog(10*time.Second, "session closed", nil)
	return e.goroutines(t)
}

// TestFaultBackendKilledMidStream cuts the connection to the API server
// under a live session. Over WebSocket the cut surfaces as an error and the
// client gets a Failure status and 1011. (SPDY: TestFaultBackendCutOverSPDY.)
func TestFaultBackendKilledMidStream(t *testing.T) {
	e := startEnv(t, envOptions{viaCutter: true, transport: "websocket"})
	base := e.baseline(t)
	r := e.openCat(t, "v5.channel.k8s.io", false)
	r.echo("before-cut")
	e.cutter.Cut()
	code, status := r.closedWith()
	if code != websocket.CloseInternalServerErr || !strings.Contains(status, `"status":"Failure"`) {
		t.Fatalf("close %d status %q, want 1011 with a Failure status", code, status)
	}
	if strings.Contains(status, "127.0.0.1") {
		t.Fatalf("channel 3 names an internal address: %s", status)
	}
	e.WaitLog(10*time.Second, "session closed", func(m map[string]any) bool { return m["reason"] == "exec_failed" })
	r.ws.Close()
	e.expectNoLeak(t, base)
}

func TestFaultProcessKilledBySignal(t *testing.T) {
	e := startEnv(t, envOptions{})
	status, _, ws := e.tryUpgrade(t, upgradeRequest{path: "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?command=sh&command=-c&command=kill+-9+%24%24",
		header: bearer(e.mint(e.claims("sh", "-c", "kill -9 $$"))), protocols: []string{"v4.channel.k8s.io"}})
	if ws == nil {
		t.Fatalf("status %d", status)
	}
	r := &rawSession{t: t, ws: ws}
	code, st := r.closedWith()
	if code != websocket.CloseNormalClosure || !strings.Contains(st, `"reason":"NonZeroExitCode"`) || !strings.Contains(st, `"message":"137"`) {
		t.Fatalf("close %d status %s; want exit code 137 (128+SIGKILL)", code, st)
	}
}

func TestFaultClientVanishesMidBurst(t *testing.T) {
	e := startEnv(t, envOptions{})
	base := e.baseline(t)
	status, _, ws := e.tryUpgrade(t, upgradeRequest{path: "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?command=seq&command=1&command=100000000",
		header: bearer(e.mint(e.claims("seq", "1", "100000000"))), protocols: []string{"v4.channel.k8s.io"}})
	if ws == nil {
		t.Fatalf("status %d", status)
	}
	for range 10 {
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatal(err)
		}
	}
	ws.NetConn().Close()
	waitFor(t, 5*time.Second, "the burst's process is gone", func() bool { return len(e.backend.PIDs()) == 0 })
	e.WaitLog(10*time.Second, "session closed", func(m map[string]any) bool {
		return m["reason"] == "client_gone" || m["reason"] == "client_write_failed"
	})
	e.expectNoLeak(t, base)
	// The proxy is fine afterwards.
	e.openCat(t, "v5.channel.k8s.io", false).echo("after-vanish")
}

func TestFaultKeyDirectoryChurn(t *testing.T) {
	e := startEnv(t, envOptions{})
	live := e.openCat(t, "v5.channel.k8s.io", false)
	live.echo("before")

	// A corrupt (too short) key replaces the good one: refused and logged,
	// the good key stays usable through its grace, the session goes on.
	filewatchtest.SwapSecretDir(t, e.keyDir, map[string][]byte{"key": []byte("short")})
	e.WaitLog(10*time.Second, "key file refused", nil)
	live.echo("after-corrupt-key")
	e.openCat(t, "v5.channel.k8s.io", false).echo("old-key-in-grace")

	// The directory disappears and comes back with a new key.
	if err := os.RemoveAll(e.keyDir); err != nil {
		t.Fatal(err)
	}
	live.echo("dir-gone")
	newKey := bytes.Repeat([]byte("n"), 40)
	filewatchtest.WriteSecretDir(t, e.keyDir, map[string][]byte{"key": newKey})
	signer, err := hmac.NewSigner(newKey)
	if err != nil {
		t.Fatal(err)
	}
	// The new key becomes usable; retry with fresh tokens until it is.
	// The proxy picks the directory up on its own schedule.
	if err := poll.Until(context.Background(), 100*time.Millisecond, 15*time.Second, func(context.Context) error {
		tok, _ := signer.Sign(e.claims("true"))
		status, _, ws := e.tryUpgrade(t, upgradeRequest{path: "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?command=true",
			header: bearer(tok), protocols: []string{"v5.channel.k8s.io"}})
		if ws != nil {
			ws.Close()
			return nil
		}
		err := fmt.Errorf("status %d", status)
		if status != http.StatusUnauthorized {
			return poll.Stop(err)
		}
		return err
	}); err != nil {
		t.Fatalf("new key not usable: %v", err)
	}
	live.echo("after-recreate")
}

func TestDrainOnSIGTERM(t *testing.T) {
	raiseFileLimit(t, 4096)
	e := startEnv(t, envOptions{extraArgs: []string{"--shutdown-grace", "3s"}})
	var sessions []*rawSession
	for range 50 {
		sessions = append(sessions, e.openCat(t, "v4.channel.k8s.io", true))
	}
	sessions[0].echo("all-open")
	if err := e.Process().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	e.WaitLog(10*time.Second, "draining", nil)
	if st := readyz(t, e.Health); st != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d during drain, want 503", st)
	}
	c := e.claims("cat")
	status, _, ws := e.tryUpgrade(t, upgradeRequest{path: "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?command=cat",
		header: bearer(e.mint(c)), protocols: []string{"v4.channel.k8s.io"}})
	if ws != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("new upgrade during drain: status %d, want 503", status)
	}
	// Live sessions still work during the grace.
	sessions[1].echo("during-grace")
	for i, s := range sessions {
		code, st := s.closedWith()
		if code != websocket.CloseGoingAway || !strings.Contains(st, "shutting down") {
			t.Fatalf("session %d: close %d status %q", i, code, st)
		}
	}
	select {
	case <-e.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("proxy did not exit after the drain")
	}
	if code := e.ExitState().ExitCode(); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if n := len(e.LogLines("session closed")); n < 50 {
		t.Fatalf("%d sessions logged as closed, want 50", n)
	}
}
