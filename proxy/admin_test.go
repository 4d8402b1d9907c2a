package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// harnessKey is the key newHarnessOpts signs and verifies with.
var harnessKey = bytes.Repeat([]byte{7}, 32)

// adminServer serves h's admin API on its own listener.
func (h *harness) adminServer() string {
	h.t.Helper()
	v, err := hmac.NewAdminVerifier(hmac.AdminVerifierOptions{Keys: hmac.StaticKeys(harnessKey)})
	if err != nil {
		h.t.Fatal(err)
	}
	as := httptest.NewServer(h.srv.AdminHandler(v))
	h.t.Cleanup(as.Close)
	return as.URL
}

func (h *harness) adminToken(scope string) string {
	h.t.Helper()
	tok, err := h.signer.SignAdmin(hmac.AdminClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: "control-plane"}, Scope: scope})
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// adminCall makes one admin request and decodes the JSON answer into out.
func adminCall(t *testing.T, method, url, token string, out any) int {
	t.Helper()
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	code, _ := jsonCall(t, method, url, hdr, out)
	return code
}

// jsonCall sends one request, checks that the answer is JSON and decodes it
// into out (when not nil); it returns the HTTP status and the body.
func jsonCall(t *testing.T, method, url string, hdr http.Header, out any) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hdr != nil {
		req.Header = hdr
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, body %q; want JSON", method, url, ct, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v in %q", method, url, err, body)
		}
	}
	return resp.StatusCode, body
}

// refused dials path with tok as a bearer token, wants a refusal before
// the upgrade with status want, and decodes its Status body.
func (h *harness) refused(path, tok string, want int) metav1.Status {
	h.t.Helper()
	code, body, ws := h.try(path, http.Header{"Authorization": {"Bearer " + tok}})
	if ws != nil {
		h.t.Fatalf("%s was upgraded, want %d", path, want)
	}
	var st metav1.Status
	if err := json.Unmarshal([]byte(body), &st); code != want || err != nil {
		h.t.Fatalf("%s: status %d, body %s (%v); want a %d Status", path, code, body, err, want)
	}
	return st
}

// echo sends line on stdin and reads it back from the process (cat).
func echo(t *testing.T, ws *websocket.Conn, line string) {
	t.Helper()
	ws.WriteMessage(websocket.BinaryMessage, []byte("\x00"+line))
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "\x01"+line {
		t.Fatalf("echo: %q %v", msg, err)
	}
	ws.SetReadDeadline(time.Time{})
}

func withSubject(sub, sid string, tty bool) func(*hmac.Claims) {
	return func(c *hmac.Claims) { c.Subject, c.SID, c.TTY = sub, sid, tty }
}

// A revoked session's process is gone within 1 s of the DELETE, and its
// client reads a notice, a Revoked status and close 1008; the log has the
// revoked and closed lines.
func TestAdminRevokeEndsSessionWithinASecond(t *testing.T) {
	for _, tr := range upstreams {
		for _, tty := range []bool{true, false} {
			name := string(tr) + "/notty"
			if tty {
				name = string(tr) + "/tty"
			}
			t.Run(name, func(t *testing.T) {
				h := newHarnessVia(t, tr, nil)
				admin := h.adminServer()
				ws := h.dialClaims(ProtocolV5, withSubject("alice", "s-1", tty), "sh", "-c", "echo ready; exec sleep 600")
				ws.SetReadDeadline(time.Now().Add(30 * time.Second))
				if _, msg, err := ws.ReadMessage(); err != nil || !strings.HasPrefix(string(msg[1:]), "ready") {
					t.Fatalf("first output %q %v", msg, err)
				}
				if err := h.waitProcesses(10*time.Second, 1); err != nil {
					t.Fatal(err)
				}
				got := readAsync(ws, 10*time.Second)
				start := time.Now()
				var rv Revoked
				if code := adminCall(t, "DELETE", admin+"/sessions/s-1", h.adminToken(hmac.ScopeSessionsRevoke), &rv); code != 200 || !slices.Equal(rv.Revoked, []string{"s-1"}) {
					t.Fatalf("DELETE: %d %+v", code, rv)
				}
				if err := h.waitProcesses(time.Second-time.Since(start), 0); err != nil {
					t.Fatalf("%v (revoked %v ago)", err, time.Since(start))
				}
				t.Logf("process gone %v after the DELETE", time.Since(start))
				e := <-got
				notice := e.stderr
				if tty {
					notice = e.stdout
				}
				if e.code != websocket.ClosePolicyViolation || !strings.Contains(string(notice), "[k8s-ws-proxy] session revoked by an administrator\r\n") {
					t.Fatalf("close %d, notice %q (stdout %q, stderr %q)", e.code, notice, e.stdout, e.stderr)
				}
				var st metav1.Status
				if err := json.Unmarshal([]byte(e.status), &st); err != nil || st.Status != metav1.StatusFailure || st.Reason != RevokedReason {
					t.Fatalf("status %q (%v)", e.status, err)
				}
				rec := h.log.wait(t, 5*time.Second, "session revoked")
				if rec["sid"] != "s-1" || rec["sub"] != "alice" || rec["admin_sub"] != "control-plane" {
					t.Fatalf("revoked line %v", rec)
				}
				closed := h.log.wait(t, 5*time.Second, "session closed")
				if closed["reason"] != "revoked" || closed["close_code"] != float64(websocket.ClosePolicyViolation) {
					t.Fatalf("closed line %v", closed)
				}
			})
		}
	}
}

// A client that reads nothing while its process floods output (every
// write toward it stalls) still has its process gone within 1 s of the
// DELETE: the exec is cancelled before the client is told why.
func TestAdminRevokeStalledClient(t *testing.T) {
	eachUpstream(t, nil, func(t *testing.T, h *harness) {
		admin := h.adminServer()
		h.dialClaims(ProtocolV4, withSubject("alice", "s-1", true), "yes") // never read
		if err := h.waitProcesses(10*time.Second, 1); err != nil {
			t.Fatal(err)
		}
		h.waitStalled(t, admin)
		start := time.Now()
		if code := adminCall(t, "DELETE", admin+"/sessions/s-1", h.adminToken(hmac.ScopeSessionsRevoke), nil); code != 200 {
			t.Fatalf("DELETE: %d", code)
		}
		if err := h.waitProcesses(time.Second-time.Since(start), 0); err != nil {
			t.Fatalf("%v (revoked %v ago)", err, time.Since(start))
		}
		t.Logf("process gone %v after the DELETE", time.Since(start))
		if closed := h.log.wait(t, 5*time.Second, "session closed"); closed["reason"] != "revoked" {
			t.Fatalf("closed line %v", closed)
		}
	})
}

// waitStalled polls the admin list until the only session's output has
// stopped growing for 200 ms: every buffer toward the client is full and
// the session's writer is blocked.
func (h *harness) waitStalled(t *testing.T, admin string) {
	t.Helper()
	tok := h.adminToken(hmac.ScopeSessionsList)
	deadline := time.Now().Add(30 * time.Second)
	last, since := int64(-1), time.Now()
	for time.Now().Before(deadline) {
		var list SessionList
		adminCall(t, "GET", admin+"/sessions", tok, &list)
		if len(list.Items) != 1 {
			t.Fatalf("sessions %+v", list.Items)
		}
		if n := list.Items[0].BytesOut; n != last {
			last, since = n, time.Now()
		} else if n > 0 && time.Since(since) > 200*time.Millisecond {
			t.Logf("output stalled at %d bytes", n)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("output never stalled")
}

// GET /sessions lists every live session with its counters; DELETE
// ?sub= ends all of one subject's sessions and leaves the others alone.
func TestAdminListAndRevokeBySubject(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	admin := h.adminServer()
	a1 := h.dialClaims(ProtocolV5, withSubject("alice", "a-1", false), "cat")
	a2 := h.dialClaims(ProtocolV4, withSubject("alice", "a-2", false), "cat")
	b1 := h.dialClaims(ProtocolV5, withSubject("bob", "b-1", false), "cat")
	echo(t, a1, "hello\n")
	echo(t, b1, "hi\n")
	// Every exec is up before anything is revoked: an exec cancelled while
	// its SPDY streams are being set up leaves the backend waiting for them
	// until its stream-creation timeout (a goroutine goleak would report).
	echo(t, a2, "x\n")

	var list SessionList
	if code := adminCall(t, "GET", admin+"/sessions", h.adminToken(hmac.ScopeSessionsList), &list); code != 200 {
		t.Fatalf("GET: %d", code)
	}
	bySID := map[string]SessionInfo{}
	for _, s := range list.Items {
		bySID[s.SID] = s
	}
	a := bySID["a-1"]
	if len(list.Items) != 3 || a.Subject != "alice" || a.BytesIn != 6 || a.BytesOut != 6 || a.Protocol != ProtocolV5 ||
		a.Transport != string(exec.TransportAuto) || a.Target.Namespace != "ns" || a.Target.Pod != "pod" ||
		a.Target.Container != "c" || !slices.Equal(a.Target.Command, []string{"cat"}) || time.Since(a.Start) > time.Minute {
		t.Fatalf("sessions %+v", list.Items)
	}
	if b := bySID["b-1"]; b.Subject != "bob" || b.BytesIn != 3 || bySID["a-2"].Protocol != ProtocolV4 {
		t.Fatalf("sessions %+v", list.Items)
	}
	list = SessionList{}
	if adminCall(t, "GET", admin+"/sessions?sub=bob", h.adminToken(hmac.ScopeSessionsList), &list); len(list.Items) != 1 || list.Items[0].SID != "b-1" {
		t.Fatalf("sessions of bob %+v", list.Items)
	}

	ends := []<-chan ending{readAsync(a1, 10*time.Second), readAsync(a2, 10*time.Second)}
	var rv Revoked
	if code := adminCall(t, "DELETE", admin+"/sessions?sub=alice", h.adminToken(hmac.ScopeSessionsRevoke), &rv); code != 200 || !slices.Equal(rv.Revoked, []string{"a-1", "a-2"}) {
		t.Fatalf("DELETE ?sub=alice: %d %+v", code, rv)
	}
	for _, ch := range ends {
		if e := <-ch; e.code != websocket.ClosePolicyViolation {
			t.Fatalf("alice's session closed with %d", e.code)
		}
	}
	echo(t, b1, "still here\n")
	// Nobody left to revoke is not an error: the call is idempotent.
	rv = Revoked{}
	if code := adminCall(t, "DELETE", admin+"/sessions?sub=alice", h.adminToken(hmac.ScopeSessionsRevoke), &rv); code != 200 || rv.Revoked == nil || len(rv.Revoked) != 0 {
		t.Fatalf("second DELETE: %d %+v", code, rv)
	}
}

// Every bad admin request gets its Status, a log line without the token,
// and leaves live sessions alone.
func TestAdminRefusals(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	admin := h.adminServer()
	ws := h.dialClaims(ProtocolV5, withSubject("alice", "a-1", false), "cat")
	now := time.Now()
	sessionToken, err := h.signer.Sign(hmac.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "alice"}, Namespace: "ns", Pod: "pod"})
	if err != nil {
		t.Fatal(err)
	}
	// A session-shaped token minted for the admin audience has no scope.
	adminAudNoScope, err := h.signer.Sign(hmac.Claims{RegisteredClaims: jwt.RegisteredClaims{Audience: jwt.ClaimStrings{hmac.AdminAudience}}, Namespace: "ns", Pod: "pod"})
	if err != nil {
		t.Fatal(err)
	}
	foreign := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"aud": "someone-else", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "scope": "sessions:list sessions:revoke"})
	foreign.Header["kid"] = hmac.KeyID(harnessKey)
	wrongAud, err := foreign.SignedString(harnessKey)
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, _ := hmac.NewSigner(bytes.Repeat([]byte{8}, 32))
	otherKey, _ := otherSigner.SignAdmin(hmac.AdminClaims{Scope: "sessions:list"})
	list, revoke := h.adminToken(hmac.ScopeSessionsList), h.adminToken(hmac.ScopeSessionsRevoke)

	cases := []struct {
		name, method, path, token string
		code                      int32
		reason                    metav1.StatusReason
		message                   string
	}{
		{"no token", "GET", "/sessions", "", 401, metav1.StatusReasonUnauthorized, "an admin token is required"},
		{"session token", "GET", "/sessions", sessionToken, 401, metav1.StatusReasonUnauthorized, "wrong_audience"},
		{"session token revoke", "DELETE", "/sessions/a-1", sessionToken, 401, metav1.StatusReasonUnauthorized, "wrong_audience"},
		{"wrong audience", "GET", "/sessions", wrongAud, 401, metav1.StatusReasonUnauthorized, "wrong_audience"},
		{"no scope", "GET", "/sessions", adminAudNoScope, 401, metav1.StatusReasonUnauthorized, "missing_scope"},
		{"other key", "GET", "/sessions", otherKey, 401, metav1.StatusReasonUnauthorized, "unknown_key"},
		{"garbage", "GET", "/sessions", "not-a-token", 401, metav1.StatusReasonUnauthorized, "malformed"},
		{"list scope revokes", "DELETE", "/sessions/a-1", list, 403, metav1.StatusReasonForbidden, "lacks sessions:revoke"},
		{"list scope revokes sub", "DELETE", "/sessions?sub=alice", list, 403, metav1.StatusReasonForbidden, "lacks sessions:revoke"},
		{"revoke scope lists", "GET", "/sessions", revoke, 403, metav1.StatusReasonForbidden, "lacks sessions:list"},
		{"unknown sid", "DELETE", "/sessions/no-such-sid", revoke, 404, metav1.StatusReasonNotFound, `sessions "no-such-sid" not found`},
		{"delete all", "DELETE", "/sessions", revoke, 400, metav1.StatusReasonBadRequest, "needs exactly one sub"},
		{"two subs", "DELETE", "/sessions?sub=alice&sub=bob", revoke, 400, metav1.StatusReasonBadRequest, "needs exactly one sub"},
		{"wrong method", "POST", "/sessions/a-1", revoke, 405, metav1.StatusReasonMethodNotAllowed, "POST"},
		{"unknown path", "GET", "/other", list, 404, metav1.StatusReasonNotFound, "not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var st metav1.Status
			code := adminCall(t, tc.method, admin+tc.path, tc.token, &st)
			if int32(code) != tc.code || st.Code != tc.code || st.Kind != "Status" || st.Status != metav1.StatusFailure ||
				st.Reason != tc.reason || !strings.Contains(st.Message, tc.message) {
				t.Fatalf("HTTP %d, status %+v; want %d %s %q", code, st, tc.code, tc.reason, tc.message)
			}
		})
	}
	echo(t, ws, "untouched\n")
	refused, _ := h.log.records("admin request refused")
	if len(refused) != len(cases) {
		t.Fatalf("%d refusal lines for %d refusals", len(refused), len(cases))
	}
	h.log.mu.Lock()
	logged := h.log.buf.String()
	h.log.mu.Unlock()
	for _, tok := range []string{sessionToken, wrongAud, adminAudNoScope, otherKey, list, revoke} {
		for _, part := range strings.Split(tok, ".")[1:] {
			if strings.Contains(logged, part) {
				t.Fatalf("the log holds part of a token: %q", part)
			}
		}
	}
}

// --max-sessions-per-subject refuses one more session of a subject with
// 429 and a Status before the upgrade; other subjects are not affected.
func TestMaxSessionsPerSubject(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.MaxSessionsPerSubject = 2 })
	h.dialClaims(ProtocolV5, withSubject("alice", "a-1", false), "cat")
	h.dialClaims(ProtocolV5, withSubject("alice", "a-2", false), "cat")
	now := time.Now()
	tok, err := h.signer.Sign(hmac.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "alice",
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
		Namespace: "ns", Pod: "pod", Container: "c", Command: []string{"cat"}, Stdin: true})
	if err != nil {
		t.Fatal(err)
	}
	st := h.refused("/api/v1/namespaces/ns/pods/pod/exec", tok, http.StatusTooManyRequests)
	if st.Code != 429 || st.Reason != metav1.StatusReasonTooManyRequests || !strings.Contains(st.Message, `subject "alice" is at its limit of 2`) {
		t.Fatalf("status %+v", st)
	}
	rec := h.log.wait(t, 5*time.Second, "session rejected")
	if rec["reason"] != "too_many_sessions_for_subject" || rec["status"] != float64(429) {
		t.Fatalf("rejected line %v", rec)
	}
	echo(t, h.dialClaims(ProtocolV5, withSubject("bob", "b-1", false), "cat"), "bob\n")
}
