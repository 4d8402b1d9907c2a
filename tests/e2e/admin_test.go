package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// adminDo calls the binary's admin API with a fresh admin token of scope.
func (e *env) adminDo(t *testing.T, method, path, scope string) (int, string) {
	t.Helper()
	addr, _ := e.LogLines("listening")[0]["admin_address"].(string)
	if addr == "" {
		t.Fatalf("listening line without admin_address")
	}
	tok, err := e.signer.SignAdmin(hmac.AdminClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: "control-plane"}, Scope: scope})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, "http://"+addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Issue 15 through the binary: --admin-listen lists and revokes a live
// session, whose process is gone within 1 s of the DELETE and whose
// client reads Revoked and 1008; --max-sessions-per-subject answers 429
// with a Status before the upgrade.
func TestAdminRevokeThroughBinary(t *testing.T) {
	e := startEnv(t, envOptions{extraArgs: []string{"--admin-listen", "127.0.0.1:0", "--max-sessions-per-subject", "1"}})
	c := e.claims("sleep", "600")
	c.Stdin, c.SID = true, "e2e-1"
	q := url.Values{"container": {testContainer}, "command": c.Command}
	path := "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?" + q.Encode()
	_, body, ws := e.tryUpgrade(t, upgradeRequest{path: path, header: bearer(e.mint(c)), protocols: []string{"v5.channel.k8s.io"}})
	if ws == nil {
		t.Fatalf("open: %s", body)
	}
	defer ws.Close()
	e.waitProcesses(t, 10*time.Second, 1)

	// Same subject, second session: refused before the upgrade.
	c2 := e.claims("sleep", "600")
	status, body, ws2 := e.tryUpgrade(t, upgradeRequest{path: path, header: bearer(e.mint(c2)), protocols: []string{"v5.channel.k8s.io"}})
	if ws2 != nil {
		ws2.Close()
		t.Fatal("second session of the subject upgraded")
	}
	if status != http.StatusTooManyRequests || !strings.Contains(body, `"reason":"TooManyRequests"`) {
		t.Fatalf("second session: %d %s", status, body)
	}

	code, body := e.adminDo(t, "GET", "/sessions", hmac.ScopeSessionsList)
	var list struct {
		Items []struct {
			SID, Sub string
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil || len(list.Items) != 1 || list.Items[0].SID != "e2e-1" || list.Items[0].Sub != c.Subject {
		t.Fatalf("GET /sessions: %d %s", code, body)
	}
	if code, body := e.adminDo(t, "DELETE", "/sessions/e2e-1", hmac.ScopeSessionsList); code != 403 || !strings.Contains(body, `"kind":"Status"`) {
		t.Fatalf("DELETE with the list scope: %d %s", code, body)
	}
	if code, body := e.adminDo(t, "DELETE", "/sessions/nope", hmac.ScopeSessionsRevoke); code != 404 || !strings.Contains(body, `"reason":"NotFound"`) {
		t.Fatalf("DELETE unknown: %d %s", code, body)
	}
	// The CLI against the same endpoint.
	adminURL := "http://" + e.LogLines("listening")[0]["admin_address"].(string)
	keyFile := filepath.Join(e.keyDir, "key")
	out, err := osexec.Command(proxyBin, "sessions", "list", "--admin-url", adminURL, "--key-file", keyFile).Output()
	if err != nil || !strings.Contains(string(out), `"sid": "e2e-1"`) {
		t.Fatalf("sessions list: %v\n%s", err, out)
	}
	out, err = osexec.Command(proxyBin, "sessions", "revoke", "--admin-url", adminURL, "--key-file", keyFile, "nope").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `404 NotFound: sessions "nope" not found`) {
		t.Fatalf("sessions revoke nope: %v\n%s", err, out)
	}
	out, err = osexec.Command(proxyBin, "sessions", "revoke", "--admin-url", adminURL, "--key-file", keyFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "give a SID or --sub") {
		t.Fatalf("sessions revoke without target: %v\n%s", err, out)
	}

	start := time.Now()
	if code, body := e.adminDo(t, "DELETE", "/sessions/e2e-1", hmac.ScopeSessionsRevoke); code != 200 || !strings.Contains(body, `"e2e-1"`) {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	e.waitProcesses(t, time.Second-time.Since(start), 0)
	t.Logf("process gone %v after the DELETE", time.Since(start))
	_, st, err := testenv.ReadToClose(ws, websocket.ClosePolicyViolation, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st, `"reason":"Revoked"`) {
		t.Fatalf("status %q", st)
	}
	e.WaitLog(5*time.Second, "session closed", func(m map[string]any) bool {
		return m["sid"] == "e2e-1" && m["reason"] == "revoked" && m["close_code"] == float64(1008)
	})
}

// --revocations-file through the binary: read at start (a revocation
// survives restarts), and a ConfigMap-style swap ends a live session,
// reports the junk line by number, and leaves the rest in force.
func TestRevocationsFileThroughBinary(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "revocations")
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"list": []byte("sub:mallory\n")})
	e := startEnv(t, envOptions{extraArgs: []string{"--revocations-file", filepath.Join(dir, "list")}})
	open := func(sub string) (int, string, *websocket.Conn) {
		c := e.claims("sleep", "600")
		c.Stdin, c.Subject = true, sub
		q := url.Values{"container": {testContainer}, "command": c.Command}
		return e.tryUpgrade(t, upgradeRequest{path: "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?" + q.Encode(),
			header: bearer(e.mint(c)), protocols: []string{"v5.channel.k8s.io"}})
	}
	if status, body, ws := open("mallory"); ws != nil || status != 403 || !strings.Contains(body, "revoked") {
		t.Fatalf("mallory at start: %d %s", status, body)
	}
	_, body, ws := open("alice")
	if ws == nil {
		t.Fatalf("alice: %s", body)
	}
	defer ws.Close()
	e.waitProcesses(t, 10*time.Second, 1)
	filewatchtest.SwapSecretDir(t, dir, map[string][]byte{"list": []byte("sub:mallory\nsome junk\nsub:alice\n")})
	if _, _, err := testenv.ReadToClose(ws, websocket.ClosePolicyViolation, 20*time.Second); err != nil {
		t.Fatalf("alice's session %v", err)
	}
	e.waitProcesses(t, 5*time.Second, 0)
	p := e.WaitLog(5*time.Second, "revocations file problem", nil)
	if msg, _ := p["error"].(string); !strings.Contains(msg, "line 2:") || strings.Contains(msg, "junk") {
		t.Fatalf("problem line %v", p)
	}
	if status, body, ws := open("mallory"); ws != nil || status != 403 {
		t.Fatalf("mallory after the swap: %d %s", status, body)
	}
}
