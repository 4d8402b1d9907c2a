package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	corev1 "k8s.io/api/core/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testlog"
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

// finish reads a session to its end, so that its exec (and the backend's
// goroutines for it) are done before the test's leak check.
func finish(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	if _, _, err := testenv.ReadToClose(ws, websocket.CloseNormalClosure, 30*time.Second); err != nil {
		t.Errorf("session %v", err)
	}
	ws.Close()
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
	t.Parallel()
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
		finish(t, ws)
	}
	if st, body, _ := h.try(execPath+"?command=true", bearerHeader(tok)); st != http.StatusUnauthorized || !strings.Contains(body, "replayed") {
		t.Fatalf("second use: %d %s", st, body)
	}
}

// TestConcurrentUsesOneUpgrade: 50 simultaneous uses of one token open
// exactly one session; the others get 401 replayed.
func TestConcurrentUsesOneUpgrade(t *testing.T) {
	t.Parallel()
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
				finish(t, ws)
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

// apiServerBools is how the API server reads a boolean exec parameter
// (apimachinery's Convert_Slice_string_To_bool): tests/cluster checks the
// same table against a real kube-apiserver.
var apiServerBools = []struct {
	value string
	want  bool
}{
	{"true", true}, {"1", true}, {"yes", true}, {"TRUE", true}, {"True", true}, {"on", true}, {"", true}, {"2", true},
	{"false", false}, {"0", false}, {"FALSE", false}, {"False", false},
}

// TestQueryBooleansAsAPIServer: tty and stdin in the query are read as the
// API server reads them, then held against the token.
func TestQueryBooleansAsAPIServer(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	for _, tc := range apiServerBools {
		for _, param := range []string{"tty", "stdin"} {
			for _, claim := range []bool{true, false} {
				tok := h.mintWith(func(c *hmac.Claims) {
					if param == "tty" {
						c.TTY = claim
					} else {
						c.Stdin = claim
					}
				}, "true")
				st, body, ws := h.try(execPath+"?command=true&"+param+"="+tc.value, bearerHeader(tok))
				if ws != nil {
					finish(t, ws)
				}
				want := http.StatusForbidden
				if claim == tc.want {
					want = http.StatusSwitchingProtocols
				}
				if st != want {
					t.Errorf("%s=%q with a token saying %v: status %d, want %d %s", param, tc.value, claim, st, want, body)
				}
			}
		}
	}
}

// TestTwoAuthorizationHeaders: two different Authorization headers are
// conflicting tokens, like any other two places that disagree.
func TestTwoAuthorizationHeaders(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	a, b := h.mintWith(nil, "true"), h.mintWith(nil, "true")
	st, body, _ := h.try(execPath+"?command=true", http.Header{"Authorization": {"Bearer " + a, "Bearer " + b}})
	if st != http.StatusBadRequest || !strings.Contains(body, "different tokens") {
		t.Fatalf("two Authorization headers: status %d %s", st, body)
	}
	st, body, ws := h.try(execPath+"?command=true", http.Header{"Authorization": {"Bearer " + a, "Bearer " + a}})
	if st != http.StatusSwitchingProtocols {
		t.Fatalf("the same token twice: status %d %s", st, body)
	}
	finish(t, ws)
}

// tokenForms are the encodings a token could leak in: itself, its
// signature, and the base64url of the bearer subprotocol (with and without
// its last characters, which depend on what follows).
func tokenForms(tok string) []string {
	enc := base64.RawURLEncoding.EncodeToString([]byte(tok))
	return []string{tok, tok[strings.LastIndexByte(tok, '.')+1:], enc, enc[:len(enc)-3]}
}

// TestNoTokenInRejections: no refusal's body or log line carries a token
// in any encoding, whatever place or case it was offered in.
func TestNoTokenInRejections(t *testing.T) {
	t.Parallel()
	var log testlog.Buffer
	h := newHarness(t, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&log, nil)) })
	valid, other := h.mintWith(nil, "true"), h.mintWith(nil, "true")
	sub := func(prefix, tok string) string { return prefix + base64.RawURLEncoding.EncodeToString([]byte(tok)) }
	cases := []struct {
		name      string
		path      string
		header    http.Header
		protocols []string
		status    int
	}{
		{"mis-cased bearer subprotocol beside a valid header", execPath + "?command=true", bearerHeader(valid),
			[]string{"v3.channel.k8s.io", sub("Base64url.bearer.authorization.k8s.io.", other)}, http.StatusBadRequest},
		{"upper-case bearer subprotocol alone", execPath + "?command=true", nil,
			[]string{sub("BASE64URL.BEARER.AUTHORIZATION.K8S.IO.", other)}, http.StatusUnauthorized},
		{"bearer subprotocol with an unsupported protocol", execPath + "?command=true", nil,
			[]string{"v3.channel.k8s.io", sub("base64url.bearer.authorization.k8s.io.", other)}, http.StatusBadRequest},
		{"conflicting subprotocol and header", execPath + "?command=true", bearerHeader(valid),
			[]string{ProtocolV5, sub("base64url.bearer.authorization.k8s.io.", other)}, http.StatusBadRequest},
		{"token in the Origin", execPath + "?command=true", http.Header{"Authorization": {"Bearer " + valid}, "Origin": {"https://" + other}},
			nil, http.StatusForbidden},
		{"bad scope", "/api/v1/namespaces/x/pods/pod/exec?command=true&token=" + other, nil, nil, http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, body, ws := h.try(tc.path, tc.header, tc.protocols...)
			if ws != nil {
				finish(t, ws)
			}
			if st != tc.status {
				t.Errorf("status %d, want %d: %s", st, tc.status, body)
			}
			for _, tok := range []string{valid, other} {
				for _, f := range tokenForms(tok) {
					if strings.Contains(body, f) {
						t.Errorf("the body carries a token: %s", body)
					}
				}
			}
		})
	}
	text := log.String()
	if !strings.Contains(text, "session rejected") {
		t.Fatalf("nothing logged: %s", text)
	}
	for _, tok := range []string{valid, other} {
		for _, f := range tokenForms(tok) {
			if strings.Contains(text, f) {
				t.Fatalf("the log carries a token (%q):\n%s", f, text)
			}
		}
	}
}

// TestPodOnAnotherNode: a token without a node claim for a pod that runs
// on another node than this proxy's is refused by the pod lookup.
func TestPodOnAnotherNode(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.NodeName = "other-node" })
	st, body, _ := h.try(execPath+"?command=true", bearerHeader(h.mintWith(nil, "true")))
	if st != http.StatusForbidden || !strings.Contains(body, "is not on this node") {
		t.Fatalf("status %d %s", st, body)
	}
}

// TestAllowedOrigins: a missing Origin and one matching the Host pass, a
// listed one passes, others are refused; "*" passes any.
func TestAllowedOrigins(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		allowed []string
		origin  string
		ok      bool
	}{
		{nil, "", true},
		{nil, "https://evil.example", false},
		{[]string{"https://app.example", "https://other.example"}, "https://other.example", true},
		{[]string{"https://app.example"}, "HTTPS://APP.EXAMPLE", true},
		{[]string{"https://app.example"}, "https://app.example.evil", false},
		{[]string{"https://app.example"}, "http://app.example", false},
		{[]string{"*"}, "https://anything.example", true},
		{[]string{"*"}, "null", true},
	} {
		h := newHarness(t, func(c *Config) { c.AllowedOrigins = tc.allowed })
		hdr := bearerHeader(h.mintWith(nil, "true"))
		if tc.origin != "" {
			hdr.Set("Origin", tc.origin)
		}
		st, body, ws := h.try(execPath+"?command=true", hdr)
		if ws != nil {
			finish(t, ws)
		}
		if ok := st == http.StatusSwitchingProtocols; ok != tc.ok || (!ok && st != http.StatusForbidden) {
			t.Errorf("allowed %q, Origin %q: status %d %s", tc.allowed, tc.origin, st, body)
		}
	}
	// The Host's own origin passes without a list (guacd sends "http://{hostname}").
	h := newHarness(t, nil)
	hdr := bearerHeader(h.mintWith(nil, "true"))
	hdr.Set("Origin", h.url)
	if st, body, ws := h.try(execPath+"?command=true", hdr); st != http.StatusSwitchingProtocols {
		t.Errorf("same-host Origin: status %d %s", st, body)
	} else {
		finish(t, ws)
	}
}

// TestNoInternalAddressToClients: a failed pod lookup tells the client
// what failed, not where; the log keeps the detail.
func TestNoInternalAddressToClients(t *testing.T) {
	t.Parallel()
	var log testlog.Buffer
	pods := &flakyPods{err: errors.New(`Get "http://127.0.0.1:38443/api/v1/namespaces/ns/pods/pod": dial tcp 127.0.0.1:38443: connect: connection refused`)}
	h := newHarness(t, func(c *Config) {
		pods.PodGetter = c.Pods
		c.Pods = pods
		c.Logger = slog.New(slog.NewJSONHandler(&log, nil))
	})
	pods.failures.Store(1)
	st, body, _ := h.try(execPath+"?command=true", bearerHeader(h.mintWith(nil, "true")))
	if st != http.StatusBadGateway {
		t.Fatalf("status %d %s", st, body)
	}
	if strings.Contains(body, "127.0.0.1") || strings.Contains(body, "http://") || !strings.Contains(body, "looking up pod ns/pod failed") {
		t.Errorf("body %s", body)
	}
	if !strings.Contains(log.String(), "127.0.0.1:38443") {
		t.Errorf("the log lost the detail: %s", log.String())
	}
}

// metricsOf reads everything a manual reader holds, as "name{attrs} value"
// lines.
func metricsOf(t *testing.T, r *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					var attrs []string
					for _, kv := range dp.Attributes.ToSlice() {
						attrs = append(attrs, string(kv.Key)+"="+kv.Value.Emit())
					}
					out[m.Name+"{"+strings.Join(attrs, ",")+"}"] += dp.Value
				}
			}
		}
	}
	return out
}

// TestResultLabelBounded: a close code the client picks does not become a
// label value of its own.
func TestResultLabelBounded(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	h := newHarness(t, func(c *Config) { c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)) })
	for _, code := range []int{4321, 3999, websocket.CloseNormalClosure} {
		tok := h.mintWith(func(c *hmac.Claims) { c.Stdin = true }, "cat")
		st, body, ws := h.try(execPath+"?command=cat", bearerHeader(tok))
		if st != http.StatusSwitchingProtocols {
			t.Fatalf("status %d %s", st, body)
		}
		// The exec is up (cat echoes) before the client leaves, so that
		// no half-opened stream is left behind in the backend.
		echo(t, ws, "up\n")
		ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""))
		ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				break
			}
		}
		ws.Close()
		for deadline := time.Now().Add(20 * time.Second); h.srv.ActiveSessions() > 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("session did not end")
			}
		}
	}
	m := metricsOf(t, reader)
	var results []string
	for k := range m {
		if strings.HasPrefix(k, "k8s_ws_proxy.sessions{") {
			results = append(results, k)
		}
	}
	if m["k8s_ws_proxy.sessions{result=client_closed_other}"] != 2 || m["k8s_ws_proxy.sessions{result=client_closed_1000}"] != 1 || len(results) != 2 {
		t.Fatalf("session results %q", results)
	}
}

// TestRejectionLogBounded: a flood of identical refusals writes a bounded
// number of lines; every refusal is still counted, and so is every line
// held back.
func TestRejectionLogBounded(t *testing.T) {
	t.Parallel()
	var log testlog.Buffer
	reader := sdkmetric.NewManualReader()
	h := newHarness(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&log, nil))
		c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	})
	const n = 2000
	elapsed := testenv.GetFlood(t, h.url+execPath+"?command=true", n, http.StatusBadRequest)
	lines := strings.Count(log.String(), `"msg":"session rejected"`)
	// A burst, then one per second of the flood.
	if limit := DefaultLogBurst + int(elapsed/DefaultLogInterval) + 1; lines > limit || lines == 0 {
		t.Fatalf("%d refusals in %s wrote %d log lines, want at most %d", n, elapsed, lines, limit)
	}
	m := metricsOf(t, reader)
	if got := m["k8s_ws_proxy.rejections{reason=not_websocket,status=400}"]; got != n {
		t.Errorf("rejections counted %d, want %d", got, n)
	}
	if got := m["k8s_ws_proxy.log.suppressed{reason=not_websocket}"]; got != int64(n-lines) {
		t.Errorf("suppressed lines counted %d, want %d", got, n-lines)
	}
	if lines > DefaultLogBurst && !strings.Contains(log.String(), `"suppressed":`) {
		t.Errorf("no line says how many it stands for")
	}
}

// stuckPods answers no pod lookup before its caller gives up.
type stuckPods struct {
	PodGetter
	entered chan struct{}
}

func (p *stuckPods) GetPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	p.entered <- struct{}{}
	<-ctx.Done()
	return nil, fmt.Errorf("get pod %s/%s: %w", ns, name, ctx.Err())
}

// A client that leaves while its request is being admitted is logged and
// counted as client_gone, not as a failed pod lookup that blames the API
// server.
func TestClientGoneDuringAdmission(t *testing.T) {
	t.Parallel()
	pods := &stuckPods{entered: make(chan struct{}, 1)}
	h := newHarness(t, func(c *Config) { c.Pods = pods })
	tok := h.mintWith(nil, "true")
	ctx := testenv.Context(t, 30*time.Second)
	conns := make(chan net.Conn, 1)
	dialed := make(chan error, 1)
	go func() {
		// gorilla does not watch the context once connected: the test
		// closes the connection itself.
		d := websocket.Dialer{Subprotocols: []string{ProtocolV5}, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				conns <- c
			}
			return c, err
		}}
		_, _, err := d.DialContext(ctx, "ws"+strings.TrimPrefix(h.url, "http")+execPath+"?command=true", bearerHeader(tok))
		dialed <- err
	}()
	select {
	case <-pods.entered:
	case <-ctx.Done():
		t.Fatal("the request never reached its pod lookup")
	}
	(<-conns).Close()
	if err := <-dialed; err == nil {
		t.Fatal("dial succeeded")
	}
	rec := h.log.wait(t, 10*time.Second, "session rejected")
	if rec["reason"] != "client_gone" || !strings.Contains(fmt.Sprint(rec["error"]), "pod_lookup_failed") {
		t.Fatalf("rejected line %v", rec)
	}
}
