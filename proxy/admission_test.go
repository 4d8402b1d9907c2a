package proxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/recording"
)

// fakeExec hands over the targets it is asked to open, and writes "ok".
type fakeExec struct{ targets chan exec.Target }

func (f *fakeExec) Stream(_ context.Context, t exec.Target, s exec.Streams) (exec.Result, error) {
	f.targets <- t
	if _, err := s.Stdout.Write([]byte("ok")); err != nil {
		return exec.Result{}, err
	}
	return exec.Result{Transport: exec.TransportWebSocket}, nil
}

// fakePods answers by pod name: "pod" runs here with container "c"; the
// others fail the way an API server would.
type fakePods struct{}

func (fakePods) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	gr := schema.GroupResource{Resource: "pods"}
	switch name {
	case "pod":
		return &corev1.Pod{Spec: corev1.PodSpec{NodeName: "node", Containers: []corev1.Container{{Name: "c"}}}}, nil
	case "elsewhere":
		return &corev1.Pod{Spec: corev1.PodSpec{NodeName: "other-node", Containers: []corev1.Container{{Name: "c"}}}}, nil
	case "forbidden":
		return nil, apierrors.NewForbidden(gr, name, errors.New("RBAC: access denied"))
	case "down":
		return nil, errors.New(`Get "https://10.96.0.1:443/api/v1/namespaces/ns/pods/down": dial tcp 10.96.0.1:443: connect: connection refused`)
	}
	return nil, apierrors.NewNotFound(gr, name)
}

// fakeAccess answers the SelfSubjectAccessReview.
type fakeAccess struct {
	ok  bool
	why string
	err error
}

func (a fakeAccess) CanExec(context.Context, exec.Target) (bool, string, error) {
	return a.ok, a.why, a.err
}

// fakeVerifier wraps the real verifier, failing Check or Consume with a
// given error.
type fakeVerifier struct {
	TokenVerifier
	check, consume error
}

func (f *fakeVerifier) Check(tok string) (*hmac.Claims, error) {
	if f.check != nil {
		return nil, f.check
	}
	return f.TokenVerifier.Check(tok)
}

func (f *fakeVerifier) Consume(c *hmac.Claims) error {
	if f.consume != nil {
		return f.consume
	}
	return f.TokenVerifier.Consume(c)
}

// admissionFixture is a Server in front of fakes, with a real verifier.
type admissionFixture struct {
	srv      *Server
	verifier *hmac.Verifier
	signer   *hmac.Signer
	exec     *fakeExec
	log      *lockedLines
}

var admissionKey = bytes.Repeat([]byte{9}, 32)

func newAdmissionFixture(t *testing.T, mod func(*Config)) *admissionFixture {
	t.Helper()
	v, err := hmac.NewVerifier(hmac.VerifierOptions{Keys: hmac.StaticKeys(admissionKey)})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := hmac.NewSigner(admissionKey)
	if err != nil {
		t.Fatal(err)
	}
	f := &admissionFixture{verifier: v, signer: signer, exec: &fakeExec{targets: make(chan exec.Target, 4)}, log: &lockedLines{}}
	cfg := Config{Verifier: v, Executor: f.exec, Pods: fakePods{}, NodeName: "node", LogBurst: -1,
		Logger: slog.New(slog.NewJSONHandler(f.log, nil))}
	if mod != nil {
		mod(&cfg)
	}
	if f.srv, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return f
}

func baseClaims() hmac.Claims {
	now := time.Now()
	return hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "alice", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
		SID:              "sid-1", Namespace: "ns", Pod: "pod", Container: "c", Command: []string{"sh"}, Stdin: true,
	}
}

// observeClaims edits baseClaims into an observe token of the same
// target (read-only: no stdin; the request then asks for none either).
func observeClaims(edit func(*hmac.Claims)) func(*hmac.Claims) {
	return func(c *hmac.Claims) {
		c.Mode, c.Stdin = hmac.ModeObserve, false
		if edit != nil {
			edit(c)
		}
	}
}

// liveSession registers an upgraded, running session with claims c (its
// sid is theirs), as admitObserver finds it.
func (f *admissionFixture) liveSession(c hmac.Claims) *session {
	ss := &session{id: c.SID, claims: &c, cfg: &f.srv.cfg}
	ss.upgraded.Store(true)
	f.srv.mu.Lock()
	f.srv.sessions[ss] = struct{}{}
	f.srv.mu.Unlock()
	return ss
}

func (f *admissionFixture) sign(t *testing.T, c hmac.Claims) string {
	t.Helper()
	tok, err := f.signer.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// upgradeRequest is a WebSocket handshake for path, in process.
func upgradeRequest(path string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	r.Header.Set("Sec-WebSocket-Protocol", ProtocolV5)
	return r
}

const admissionPath = "/api/v1/namespaces/ns/pods/pod/exec?command=sh&container=c&stdin=true&stdout=true"

func (f *admissionFixture) logText() string {
	f.log.mu.Lock()
	defer f.log.mu.Unlock()
	return f.log.buf.String()
}

// query edits the request's query; header sets (or, with "", deletes) a header.
func query(old, new string) func(*http.Request) {
	return func(r *http.Request) { r.URL.RawQuery = strings.Replace(r.URL.RawQuery, old, new, 1) }
}

func header(name, value string) func(*http.Request) {
	return func(r *http.Request) {
		if value == "" {
			r.Header.Del(name)
			return
		}
		r.Header.Set(name, value)
	}
}

// rejectedLine is the one "session rejected" log line.
func (f *admissionFixture) rejectedLine(t *testing.T) map[string]any {
	t.Helper()
	recs, _ := f.log.records("session rejected")
	if len(recs) != 1 {
		t.Fatalf("%d \"session rejected\" lines, want 1:\n%s", len(recs), f.logText())
	}
	return recs[0]
}

// statusReasons are the reasons client-go gives each code (InternalError
// for a 5xx without one of its own).
var statusReasons = map[int]metav1.StatusReason{
	400: metav1.StatusReasonBadRequest, 401: metav1.StatusReasonUnauthorized, 403: metav1.StatusReasonForbidden,
	404: metav1.StatusReasonNotFound, 409: metav1.StatusReasonConflict, 429: metav1.StatusReasonTooManyRequests,
	501: metav1.StatusReasonInternalError, 502: metav1.StatusReasonInternalError, 503: metav1.StatusReasonServiceUnavailable,
	410: metav1.StatusReasonGone, 416: metav1.StatusReasonBadRequest,
}

// TestAdmissionRefusals: every refusal admission.go can give, in process
// with fake pods, executor and access review. Each answers with its HTTP
// status and a metav1.Status of that code and reason, logs one line with
// its reason and never the token, leaves the token unspent when the token
// was good, and starts no exec.
func TestAdmissionRefusals(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	cases := []struct {
		name    string
		cfg     func(*Config)
		claims  func(*hmac.Claims)
		edit    func(r *http.Request)             // the request, but for the token
		place   func(r *http.Request, tok string) // where the token goes; nil: Authorization
		setup   func(t *testing.T, f *admissionFixture, tok string)
		status  int
		reason  string // the log's and the metrics' reason
		tokenOK bool   // the token passed its check: it must not be spent
	}{
		// Before the token is read.
		{name: "draining", setup: func(_ *testing.T, f *admissionFixture, _ string) { f.srv.draining.Store(true) }, status: 503, reason: "draining"},
		{name: "origin", edit: header("Origin", "https://evil.example"), status: 403, reason: "origin_not_allowed"},
		{name: "not a websocket", edit: header("Upgrade", ""), status: 400, reason: "not_websocket"},
		{name: "bad query", edit: query("command=sh", "command=%zz"), status: 400, reason: "bad_query"},
		{name: "bad bearer subprotocol", edit: header("Sec-WebSocket-Protocol", ProtocolV5+", "+bearerProtocolPrefix+"!!!"), status: 400, reason: "bad_subprotocol"},
		// The token and where it is.
		{name: "authorization not bearer", place: func(r *http.Request, tok string) { r.Header.Set("Authorization", "Basic "+tok) }, status: 401, reason: "malformed"},
		{name: "empty token query", edit: query("stdout=true", "stdout=true&token="), status: 401, reason: "malformed"},
		{name: "no token", place: func(*http.Request, string) {}, status: 401, reason: "missing_token"},
		{name: "conflicting tokens", place: func(r *http.Request, tok string) {
			r.Header.Set("Authorization", "Bearer "+tok)
			r.URL.RawQuery += "&token=" + tok + "x"
		}, status: 400, reason: "conflicting_tokens"},
		{name: "garbage token", place: func(r *http.Request, _ string) { r.Header.Set("Authorization", "Bearer not-a-token") }, status: 401, reason: "malformed"},
		{name: "bad signature", place: func(r *http.Request, tok string) { r.Header.Set("Authorization", "Bearer "+tok[:len(tok)-2]+"AA") }, status: 401, reason: "bad_signature"},
		{name: "expired", claims: func(c *hmac.Claims) {
			c.IssuedAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-30 * time.Minute))
		}, status: 401, reason: "expired"},
		{name: "replayed", setup: func(t *testing.T, f *admissionFixture, tok string) {
			claims, err := f.verifier.Check(tok)
			if err == nil {
				err = f.verifier.Consume(claims)
			}
			if err != nil {
				t.Fatal(err)
			}
		}, status: 401, reason: "replayed"},
		{name: "replay cache full at check", cfg: func(c *Config) {
			c.Verifier = &fakeVerifier{TokenVerifier: c.Verifier, check: &hmac.Error{Reason: hmac.ReasonReplayCacheFull}}
		}, status: 503, reason: "replay_cache_full"},
		{name: "verifier error", cfg: func(c *Config) { c.Verifier = &fakeVerifier{TokenVerifier: c.Verifier, check: errBoom} }, status: 401, reason: "unknown"},
		// The claims, and the request against them.
		{name: "bad namespace claim", claims: func(c *hmac.Claims) { c.Namespace = "NS_1" }, status: 403, reason: "bad_claims", tokenOK: true},
		{name: "bad pod claim", claims: func(c *hmac.Claims) { c.Pod = "Pod_1" }, status: 403, reason: "bad_claims", tokenOK: true},
		{name: "bad container claim", claims: func(c *hmac.Claims) { c.Container = "C_1" }, status: 403, reason: "bad_claims", tokenOK: true},
		{name: "token for another node", claims: func(c *hmac.Claims) { c.Node = "other-node" }, status: 403, reason: "wrong_node", tokenOK: true},
		{name: "namespace mismatch", claims: func(c *hmac.Claims) { c.Namespace = "ns2" }, status: 403, reason: "scope_mismatch", tokenOK: true},
		{name: "pod mismatch", claims: func(c *hmac.Claims) { c.Pod = "pod2" }, status: 403, reason: "scope_mismatch", tokenOK: true},
		{name: "attach with an exec token", edit: func(r *http.Request) { r.URL.Path = strings.Replace(r.URL.Path, "/exec", "/attach", 1) }, status: 403, reason: "scope_mismatch", tokenOK: true},
		{name: "exec with an attach token", claims: func(c *hmac.Claims) { c.Command = nil }, edit: query("command=sh&", ""), status: 403, reason: "scope_mismatch", tokenOK: true},
		{name: "container mismatch", edit: query("container=c", "container=d"), status: 403, reason: "scope_mismatch", tokenOK: true},
		{name: "command mismatch", edit: query("command=sh", "command=ls"), status: 403, reason: "scope_mismatch", tokenOK: true},
		{name: "tty mismatch", edit: query("stdout=true", "stdout=true&tty=true"), status: 403, reason: "scope_mismatch", tokenOK: true},
		{name: "stdin mismatch", edit: query("stdin=true", "stdin=false"), status: 403, reason: "scope_mismatch", tokenOK: true},
		// Policy and subprotocol.
		{name: "namespace denied", cfg: func(c *Config) { c.Namespaces = NamespacePolicy{Denied: []string{"n*"}} }, status: 403, reason: "namespace_denied", tokenOK: true},
		{name: "unsupported subprotocol", edit: header("Sec-WebSocket-Protocol", "v9.channel.k8s.io"), status: 400, reason: "unsupported_subprotocol", tokenOK: true},
		// The pod and the user.
		{name: "pod not found", claims: func(c *hmac.Claims) { c.Pod = "gone" }, status: 404, reason: "pod_not_found", tokenOK: true},
		{name: "pod on another node", claims: func(c *hmac.Claims) { c.Pod = "elsewhere" }, status: 403, reason: "wrong_node", tokenOK: true},
		{name: "container not found", claims: func(c *hmac.Claims) { c.Container = "d" }, edit: query("container=c", "container=d"), status: 404, reason: "container_not_found", tokenOK: true},
		{name: "pod lookup forbidden", claims: func(c *hmac.Claims) { c.Pod = "forbidden" }, status: 502, reason: "pod_lookup_forbidden", tokenOK: true},
		{name: "pod lookup forbidden for the user", cfg: func(c *Config) { c.Impersonate = true },
			claims: func(c *hmac.Claims) { c.Pod = "forbidden" }, status: 403, reason: "forbidden", tokenOK: true},
		{name: "pod lookup failed", claims: func(c *hmac.Claims) { c.Pod = "down" }, status: 502, reason: "pod_lookup_failed", tokenOK: true},
		{name: "no subject to impersonate", cfg: func(c *Config) { c.Impersonate = true },
			claims: func(c *hmac.Claims) { c.Subject = "" }, status: 403, reason: "no_subject", tokenOK: true},
		{name: "access review failed", cfg: func(c *Config) { c.Impersonate, c.Access = true, fakeAccess{err: errBoom} }, status: 502, reason: "access_review_failed", tokenOK: true},
		{name: "access denied", cfg: func(c *Config) { c.Impersonate, c.Access = true, fakeAccess{why: "RBAC says no"} }, status: 403, reason: "forbidden", tokenOK: true},
		// register: limits, revocations, the recording, spending the token.
		{name: "session limit", cfg: func(c *Config) { c.MaxSessions = 1 },
			setup: func(_ *testing.T, f *admissionFixture, _ string) {
				f.srv.sessions[&session{claims: &hmac.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "bob"}}}] = struct{}{}
			}, status: 503, reason: "too_many_sessions", tokenOK: true},
		{name: "subject limit", cfg: func(c *Config) { c.MaxSessionsPerSubject = 1 },
			setup: func(_ *testing.T, f *admissionFixture, _ string) {
				f.srv.sessions[&session{claims: &hmac.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "alice"}}}] = struct{}{}
			}, status: 429, reason: "too_many_sessions_for_subject", tokenOK: true},
		{name: "revoked subject", setup: func(_ *testing.T, f *admissionFixture, _ string) {
			f.srv.SetRevocations(Revocations{Subjects: map[string]bool{"alice": true}})
		}, status: 403, reason: "revoked", tokenOK: true},
		{name: "recording unavailable", cfg: func(c *Config) {
			dir := t.TempDir() + "/spool"
			rec, err := recording.New(recording.Config{Mode: recording.Required, Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			// A file where the spool directory was: opening fails.
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			c.Recorder = rec
		}, status: 503, reason: "recording_unavailable", tokenOK: true},
		{name: "replayed at consume", cfg: func(c *Config) {
			c.Verifier = &fakeVerifier{TokenVerifier: c.Verifier, consume: &hmac.Error{Reason: hmac.ReasonReplayed}}
		}, status: 401, reason: "replayed", tokenOK: true},
		{name: "replay cache full at consume", cfg: func(c *Config) {
			c.Verifier = &fakeVerifier{TokenVerifier: c.Verifier, consume: &hmac.Error{Reason: hmac.ReasonReplayCacheFull}}
		}, status: 503, reason: "replay_cache_full", tokenOK: true},
		// Resume and observe tokens.
		{name: "resume off", cfg: func(c *Config) { c.ResumeWindow = -1 }, claims: func(c *hmac.Claims) { c.Resumable = true }, status: 501, reason: "resume_unsupported", tokenOK: true},
		{name: "resumable without sid", claims: func(c *hmac.Claims) { c.Resumable, c.SID = true, "" }, status: 400, reason: "resumable_without_sid", tokenOK: true},
		{name: "observe without sid", claims: observeClaims(func(c *hmac.Claims) { c.SID = "" }), edit: query("stdin=true", "stdin=false"),
			status: 400, reason: "observe_without_sid", tokenOK: true},
		{name: "observe with stdin", claims: func(c *hmac.Claims) { c.Mode = hmac.ModeObserve }, status: 400, reason: "observe_with_stdin", tokenOK: true},
		{name: "observe with resume", claims: observeClaims(func(c *hmac.Claims) { c.Resume = "sid-0" }), edit: query("stdin=true", "stdin=false"),
			status: 400, reason: "observe_with_resume", tokenOK: true},
		{name: "observe unknown session", claims: observeClaims(nil), edit: query("stdin=true", "stdin=false"),
			status: 404, reason: "observe_unknown_session", tokenOK: true},
		{name: "observe ambiguous session", claims: observeClaims(nil), edit: query("stdin=true", "stdin=false"),
			setup: func(_ *testing.T, f *admissionFixture, _ string) {
				f.liveSession(baseClaims())
				f.liveSession(baseClaims())
			}, status: 409, reason: "observe_ambiguous_session", tokenOK: true},
		{name: "observe another target", claims: observeClaims(nil), edit: query("stdin=true", "stdin=false"),
			setup: func(_ *testing.T, f *admissionFixture, _ string) {
				c := baseClaims()
				c.Command = []string{"ls"}
				f.liveSession(c)
			}, status: 403, reason: "observe_target_mismatch", tokenOK: true},
		{name: "too many observers", claims: observeClaims(nil), edit: query("stdin=true", "stdin=false"),
			setup: func(_ *testing.T, f *admissionFixture, _ string) {
				fan := f.liveSession(baseClaims()).attachFanout()
				for range maxObserversPerSession {
					fan.observers[&observer{}] = struct{}{}
				}
			}, status: 429, reason: "too_many_observers", tokenOK: true},
	}
	seen := map[string]bool{}
	for _, tc := range cases {
		seen[tc.reason] = true
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAdmissionFixture(t, tc.cfg)
			c := baseClaims()
			if tc.claims != nil {
				tc.claims(&c)
			}
			tok := f.sign(t, c)
			if tc.setup != nil {
				tc.setup(t, f, tok)
			}
			slots := f.srv.ActiveSessions()
			path := admissionPath
			if c.Pod != "pod2" { // the path names the token's pod, but for the mismatch
				path = strings.Replace(path, "/pods/pod/", "/pods/"+c.Pod+"/", 1)
			}
			r := upgradeRequest(path)
			if tc.edit != nil {
				tc.edit(r)
			}
			if tc.place != nil {
				tc.place(r, tok)
			} else {
				r.Header.Set("Authorization", "Bearer "+tok)
			}
			w := httptest.NewRecorder()
			f.srv.ServeHTTP(w, r)

			if w.Code != tc.status {
				t.Errorf("status %d, want %d (body %s)", w.Code, tc.status, w.Body)
			}
			var st metav1.Status
			if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
				t.Fatalf("body is not a Status: %v: %s", err, w.Body)
			}
			if st.Kind != "Status" || st.APIVersion != "v1" || st.Status != metav1.StatusFailure || int(st.Code) != tc.status || st.Message == "" {
				t.Errorf("Status %+v", st)
			}
			if want := statusReasons[tc.status]; st.Reason != want || st.Reason == "" {
				t.Errorf("Status reason %q, want %q", st.Reason, want)
			}
			if (w.Header().Get("Retry-After") == "1") != (tc.status == 503) {
				t.Errorf("Retry-After %q with status %d", w.Header().Get("Retry-After"), tc.status)
			}
			line := f.rejectedLine(t)
			if line["reason"] != tc.reason || line["status"] != float64(tc.status) || line["event"] != "rejected" {
				t.Errorf("log line %v, want reason %q status %d", line, tc.reason, tc.status)
			}
			// A good token's sid names the line; a token without one gets a
			// fresh id, as every request refused before its token was read.
			if sid, _ := line["sid"].(string); sid == "" || (tc.tokenOK && c.SID != "") != (sid == c.SID) {
				t.Errorf("log line sid %q (the token's is %q, token good: %v)", sid, c.SID, tc.tokenOK)
			}
			for _, form := range tokenForms(tok) {
				if strings.Contains(f.logText(), form) || strings.Contains(w.Body.String(), form) {
					t.Errorf("the token (%.12s...) is in the log or the body", form)
				}
			}
			if strings.Contains(f.logText()+w.Body.String(), "boom") != (tc.reason == "access_review_failed") {
				t.Errorf("an error's text reached the client or the log where it should not: %s", w.Body)
			}
			if tc.reason == "pod_lookup_failed" {
				if strings.Contains(w.Body.String(), "10.96.0.1") || !strings.Contains(f.logText(), "10.96.0.1") {
					t.Errorf("the API server's address must reach the log only: body %s", w.Body)
				}
			}
			if n := len(f.exec.targets); n != 0 {
				t.Errorf("a refused request opened %d execs", n)
			}
			if tc.tokenOK {
				if _, err := f.verifier.Check(tok); err != nil {
					t.Errorf("refusal %q spent the token: %v", tc.reason, err)
				}
			}
			if n := f.srv.ActiveSessions(); n != slots {
				t.Errorf("a refused session holds a slot: %d sessions, %d before the request", n, slots)
			}
		})
	}
	// Every reason admission.go can give has a row.
	for _, reason := range admissionReasons(t) {
		if !seen[reason] {
			t.Errorf("refusal reason %q has no case", reason)
		}
	}
}

// admissionReasons reads the refusal reasons out of admission.go and the
// recording's open, so that a new refusal without a case fails the table.
func admissionReasons(t *testing.T) []string {
	t.Helper()
	var reasons []string
	for _, file := range []string{"admission.go", "recording.go"} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(src), "\n") {
			_, rest, ok := strings.Cut(line, "reject(http.Status")
			if !ok {
				continue
			}
			_, rest, _ = strings.Cut(rest, ",")
			// Reasons spelled as hmac constants are listed below.
			if rest = strings.TrimSpace(rest); strings.HasPrefix(rest, `"`) {
				reason, _, _ := strings.Cut(rest[1:], `"`)
				reasons = append(reasons, reason)
			}
		}
	}
	if len(reasons) < 20 {
		t.Fatalf("found only %d reasons in admission.go: %q", len(reasons), reasons)
	}
	return append(reasons, string(hmac.ReasonMalformed), string(hmac.ReasonReplayCacheFull))
}

// TestAdmissionTokenPlacements: a token is read from each of the four
// places clients put it, the session is bridged to the exec the token
// grants (with the subprotocol the client gets), and the token is spent.
func TestAdmissionTokenPlacements(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		claims    func(*hmac.Claims)
		path      func(tok string) string
		header    func(tok string) http.Header
		protocols func(tok string) []string
		want      string // negotiated subprotocol
		stderr    bool
	}{
		{name: "guacd pod segment", claims: func(c *hmac.Claims) { c.TTY = true },
			path: func(tok string) string {
				return "/api/v1/namespaces/ns/pods/" + tok + "/exec?command=sh&stdin=true&stdout=true&tty=true"
			},
			protocols: func(string) []string { return []string{ProtocolV4} }, want: ProtocolV4, stderr: false},
		{name: "authorization header",
			path:      func(string) string { return admissionPath },
			header:    func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} },
			protocols: func(string) []string { return []string{ProtocolV4, ProtocolV5} }, want: ProtocolV5, stderr: true},
		{name: "bearer subprotocol",
			path: func(string) string { return admissionPath + "&stderr=false" },
			protocols: func(tok string) []string {
				return []string{"v4.channel.k8s.io", bearerProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(tok))}
			}, want: ProtocolV4, stderr: false},
		{name: "query", path: func(tok string) string { return admissionPath + "&token=" + tok },
			protocols: func(string) []string { return []string{ProtocolV1} }, want: ProtocolV1, stderr: true},
		{name: "all four agree", claims: func(c *hmac.Claims) { c.Container = "" },
			path: func(tok string) string {
				return "/api/v1/namespaces/ns/pods/" + tok + "/exec?command=sh&stdin=true&token=" + tok
			},
			header: func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} },
			protocols: func(tok string) []string {
				return []string{ProtocolV5, bearerProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(tok))}
			}, want: ProtocolV5, stderr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAdmissionFixture(t, nil)
			ts := httptest.NewServer(f.srv)
			t.Cleanup(ts.Close)
			c := baseClaims()
			if tc.claims != nil {
				tc.claims(&c)
			}
			tok := f.sign(t, c)
			d := websocket.Dialer{Subprotocols: tc.protocols(tok), HandshakeTimeout: 10 * time.Second}
			var hdr http.Header
			if tc.header != nil {
				hdr = tc.header(tok)
			}
			ws, resp, err := d.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+tc.path(tok), hdr)
			if err != nil {
				body := ""
				if resp != nil {
					b, _ := io.ReadAll(resp.Body)
					body = string(b)
				}
				t.Fatalf("dial: %v %s", err, body)
			}
			if got := ws.Subprotocol(); got != tc.want {
				t.Errorf("subprotocol %q, want %q", got, tc.want)
			}
			end := readToEnd(ws, 10*time.Second)
			if !bytes.Contains(end.stdout, []byte("ok")) {
				t.Errorf("stdout %q, want the exec's ok (%+v)", end.stdout, end)
			}
			ws.Close()
			n := len(f.exec.targets)
			var got exec.Target
			if n > 0 {
				got = <-f.exec.targets
			}
			want := exec.Target{Namespace: "ns", Pod: "pod", Container: c.Container, Command: []string{"sh"},
				TTY: c.TTY, Stdin: true, Stdout: true, Stderr: tc.stderr}
			if n != 1 || got.Namespace != want.Namespace || got.Pod != want.Pod || got.Container != want.Container ||
				strings.Join(got.Command, " ") != "sh" || got.TTY != want.TTY || got.Stdin != want.Stdin ||
				got.Stdout != want.Stdout || got.Stderr != want.Stderr {
				t.Errorf("exec target %+v (%d execs), want %+v", got, n, want)
			}
			if _, err := f.verifier.Check(tok); hmac.ReasonOf(err) != hmac.ReasonReplayed {
				t.Errorf("the token is not spent after its session: %v", err)
			}
			open := f.log.wait(t, 10*time.Second, "session opened")
			if open["sid"] != c.SID || open["protocol"] != tc.want {
				t.Errorf("open line %v", open)
			}
			if strings.Contains(f.logText(), tok) {
				t.Error("the token is in the log")
			}
		})
	}
}

// TestAdmitGrant: what admit hands the session, read without a network.
func TestAdmitGrant(t *testing.T) {
	t.Parallel()
	f := newAdmissionFixture(t, func(c *Config) { c.Impersonate = true })
	c := baseClaims()
	c.Groups = []string{"devs"}
	tok := f.sign(t, c)
	r := upgradeRequest(admissionPath)
	r.Header.Set("Authorization", "Bearer "+tok)
	r.SetPathValue("namespace", "ns") // what the mux sets
	r.SetPathValue("pod", "pod")
	g, rej := f.srv.admit(r.Context(), r, false)
	if rej != nil {
		t.Fatalf("refused: %v", rej)
	}
	if g.sid != "sid-1" || g.protocol != ProtocolV5 || g.claims.Subject != "alice" || !g.target.Stderr || g.target.TTY {
		t.Errorf("grant %+v", g)
	}
	id, ok := exec.IdentityFrom(g.ctx)
	if !ok || id.User != "alice" || len(id.Groups) != 1 || id.Extra[ExtraSessionID][0] != "sid-1" || id.Extra[ExtraNode][0] != "node" {
		t.Errorf("identity %+v %v", id, ok)
	}
	// admit checks the token but does not spend it.
	if _, err := f.verifier.Check(tok); err != nil {
		t.Errorf("admit spent the token: %v", err)
	}
	sess := f.srv.newSession(g, time.Now())
	defer sess.cancel()
	if _, ok := exec.IdentityFrom(sess.ctx); !ok {
		t.Error("the session's context lost the identity")
	}
	if sess.ctx.Err() != nil {
		t.Error("the session's context is done at birth")
	}
	if rej := f.srv.register(sess); rej != nil {
		t.Fatalf("register: %v", rej)
	}
	if f.srv.ActiveSessions() != 1 {
		t.Errorf("%d sessions registered", f.srv.ActiveSessions())
	}
	if _, err := f.verifier.Check(tok); hmac.ReasonOf(err) != hmac.ReasonReplayed {
		t.Errorf("register did not spend the token: %v", err)
	}
	f.srv.unregister(sess)
}

// TestGetPodHidesAPIServerAddress: kubectl's GET of the pod looks the pod
// up as admission does, and a failed lookup tells the client what failed,
// never where (the log keeps the address), as a refused upgrade does.
func TestGetPodHidesAPIServerAddress(t *testing.T) {
	t.Parallel()
	f := newAdmissionFixture(t, nil)
	c := baseClaims()
	c.Pod = "down"
	r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces/ns/pods/down", nil)
	r.Header.Set("Authorization", "Bearer "+f.sign(t, c))
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, r)
	var st metav1.Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || w.Code != http.StatusBadGateway || st.Code != http.StatusBadGateway {
		t.Fatalf("status %d %s (%v)", w.Code, w.Body, err)
	}
	if strings.Contains(w.Body.String(), "10.96.0.1") {
		t.Errorf("the client is told the API server's address: %s", w.Body)
	}
	if line := f.rejectedLine(t); line["reason"] != "pod_lookup_failed" || !strings.Contains(f.logText(), "10.96.0.1") {
		t.Errorf("the log line %v lacks the reason or the address", line)
	}
}

// TestSPDYRetryRedactsOrigin: client-go's SPDY retry is refused for a
// foreign Origin the way the upgrade is: an Origin is client input and can
// carry a token, so neither the body nor the log repeats it whole.
func TestSPDYRetryRedactsOrigin(t *testing.T) {
	t.Parallel()
	f := newAdmissionFixture(t, nil)
	tok := f.sign(t, baseClaims())
	r := httptest.NewRequest(http.MethodPost, admissionPath, nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	r.Header.Set("Origin", "https://evil.example/?t="+tok)
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Fatalf("status %d %s", w.Code, w.Body)
	}
	if line := f.rejectedLine(t); line["reason"] != "origin_not_allowed" {
		t.Errorf("log line %v", line)
	}
	for _, form := range tokenForms(tok) {
		if strings.Contains(w.Body.String()+f.logText(), form) {
			t.Errorf("the token (%.12s...) is in the body or the log: %s", form, w.Body)
		}
	}
}

// TestRefusalReasons: every HTTP code a refusal in this package is written
// with (read out of the source) has the reason the API server gives that
// code in its Status body, never an empty one.
func TestRefusalReasons(t *testing.T) {
	t.Parallel()
	type code struct {
		status int
		reason metav1.StatusReason
	}
	want := map[string]code{
		"StatusBadRequest":                   {http.StatusBadRequest, metav1.StatusReasonBadRequest},
		"StatusUnauthorized":                 {http.StatusUnauthorized, metav1.StatusReasonUnauthorized},
		"StatusForbidden":                    {http.StatusForbidden, metav1.StatusReasonForbidden},
		"StatusNotFound":                     {http.StatusNotFound, metav1.StatusReasonNotFound},
		"StatusConflict":                     {http.StatusConflict, metav1.StatusReasonConflict},
		"StatusTooManyRequests":              {http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests},
		"StatusNotImplemented":               {http.StatusNotImplemented, metav1.StatusReasonInternalError},
		"StatusBadGateway":                   {http.StatusBadGateway, metav1.StatusReasonInternalError},
		"StatusServiceUnavailable":           {http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable},
		"StatusGone":                         {http.StatusGone, metav1.StatusReasonGone},
		"StatusRequestedRangeNotSatisfiable": {http.StatusRequestedRangeNotSatisfiable, metav1.StatusReasonBadRequest},
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, e := range entries {
		f := e.Name()
		if !strings.HasSuffix(f, ".go") || strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(src), "\n") {
			for _, use := range []string{"reject(http.", "rejectResume(http.", "status: http.", "status = http.", "status := http."} {
				if _, rest, ok := strings.Cut(line, use); ok {
					name, _, _ := strings.Cut(rest, ",")
					name, _, _ = strings.Cut(name, "}")
					found++
					if _, ok := want[strings.TrimSpace(name)]; !ok {
						t.Errorf("%s refuses with http.%s, which has no expected reason here", f, name)
					}
				}
			}
		}
	}
	if found < len(want) {
		t.Errorf("read %d refusal codes out of the source, want at least %d", found, len(want))
	}
	for name, c := range want {
		st := (&rejection{status: c.status, message: "why"}).body()
		if st.Reason != c.reason || st.Reason == "" || int(st.Code) != c.status || st.Message != "why" {
			t.Errorf("%s: Status %+v, want reason %q", name, st, c.reason)
		}
	}
}

// gatedHandler holds every record of one message until gate closes, and
// says when the first one has arrived: a log sink gone slow.
type gatedHandler struct {
	slog.Handler
	msg     string
	gate    <-chan struct{}
	reached func()
}

func (g gatedHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == g.msg {
		g.reached()
		<-g.gate
	}
	return g.Handler.Handle(ctx, r)
}

func (g gatedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	g.Handler = g.Handler.WithAttrs(as)
	return g
}

func (g gatedHandler) WithGroup(name string) slog.Handler {
	g.Handler = g.Handler.WithGroup(name)
	return g
}

// A session's slot is free once its connection is closed: a close line
// that waits on a slow log sink (or a starved CPU) does not turn the next
// client away at --max-sessions, and a drain still waits for that line.
func TestSlotFreeBeforeCloseLine(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	reached := make(chan struct{})
	h := newHarness(t, func(c *Config) {
		c.MaxSessions = 1
		c.Logger = slog.New(gatedHandler{Handler: c.Logger.Handler(), msg: "session closed", gate: gate, reached: sync.OnceFunc(func() { close(reached) })})
	})
	defer close(gate)
	first := h.dial(ProtocolV5, "true")
	if _, status := readAll(t, first, DefaultMaxFrameSize, binaryFrame); !strings.Contains(status, `"Success"`) {
		t.Fatalf("first session's status %q", status)
	}
	first.Close()
	select {
	case <-reached:
	case <-time.After(20 * time.Second):
		t.Fatal("the first session never reached its close line")
	}
	echo(t, h.dial(ProtocolV5, "cat"), "next\n")
}
