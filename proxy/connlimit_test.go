package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// heldPods holds every pod lookup until release is closed: admissions
// that last as long as the test wants, as on a loaded API server.
type heldPods struct {
	PodGetter
	entered chan struct{} // one send per lookup that started
	release chan struct{}
}

func newHeldPods(real PodGetter) *heldPods {
	return &heldPods{PodGetter: real, entered: make(chan struct{}, 64), release: make(chan struct{})}
}

func (p *heldPods) GetPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	p.entered <- struct{}{}
	select {
	case <-p.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p.PodGetter.GetPod(ctx, ns, name)
}

// open releases the lookups, once.
func (p *heldPods) open() {
	select {
	case <-p.release:
	default:
		close(p.release)
	}
}

// waitEntered waits for n more lookups to have started.
func (p *heldPods) waitEntered(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for i := range n {
		select {
		case <-p.entered:
		case <-timeout:
			t.Fatalf("%d of %d pod lookups started within 20s", i, n)
		}
	}
}

// dialResult is an upgrade attempt made off the test's goroutine.
type dialResult struct {
	ws     *websocket.Conn
	status int
	header http.Header
	body   string
	err    error
}

func dialAsync(url, tok string) <-chan dialResult {
	ch := make(chan dialResult, 1)
	go func() {
		d := websocket.Dialer{Subprotocols: []string{ProtocolV5}, HandshakeTimeout: 30 * time.Second}
		ws, resp, err := d.Dial("ws"+strings.TrimPrefix(url, "http")+execPath, bearerHeader(tok))
		r := dialResult{ws: ws, err: err}
		if resp != nil {
			r.status, r.header = resp.StatusCode, resp.Header
			if ws == nil {
				b, _ := io.ReadAll(resp.Body)
				r.body = string(b)
			}
		}
		ch <- r
	}()
	return ch
}

func (r dialResult) await(t *testing.T, ch <-chan dialResult) dialResult {
	t.Helper()
	select {
	case r = <-ch:
	case <-time.After(30 * time.Second):
		t.Fatal("upgrade not answered within 30s")
	}
	if r.ws != nil {
		t.Cleanup(func() { r.ws.Close() })
	}
	return r
}

// heldHarness is a harness whose pod lookups wait for pods.release
// (released at the end of the test in any case), with maxAdmissions.
func heldHarness(t *testing.T, maxAdmissions int) (*harness, *heldPods) {
	t.Helper()
	var pods *heldPods
	h := newHarness(t, func(c *Config) {
		pods = newHeldPods(c.Pods)
		c.Pods = pods
		c.MaxAdmissions = maxAdmissions
	})
	t.Cleanup(pods.open)
	return h, pods
}

// limitedServer serves h's proxy behind a ConnLimiter of limit pending
// connections, wired as the binary wires it, and points h at it.
func limitedServer(t *testing.T, h *harness, limit int) *ConnLimiter {
	t.Helper()
	lim, err := NewConnLimiter("sessions", limit, slog.New(slog.NewJSONHandler(h.log, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ps := httptest.NewUnstartedServer(h.srv)
	ps.Listener = lim.Listener(ps.Listener)
	ps.Config.ConnState = lim.ConnState // httptest chains its own hook
	ps.Config.ConnContext = lim.ConnContext
	ps.Start()
	// Closing every connection first ends requests still held in a lookup
	// (their contexts are cancelled): Close alone would wait for them.
	t.Cleanup(func() { ps.CloseClientConnections(); ps.Close() })
	h.url = ps.URL
	return lim
}

// TestAdmittedRequestsAreNotEvicted: more session requests than
// --max-pending-connections held in admission (a pod lookup that waits)
// are not pending connections: header-less connections beyond the limit
// evict each other, never an admitted request, and every admitted request
// gets its session once the lookups answer (issue 11: `make load` lost
// sessions as "unexpected EOF" when the oldest admissions were closed).
func TestAdmittedRequestsAreNotEvicted(t *testing.T) {
	t.Parallel()
	const limit, admitted, headerless = 2, 6, 3
	h, pods := heldHarness(t, admitted)
	lim := limitedServer(t, h, limit)

	// One at a time, so that each is in its lookup (admitted) before the
	// next connection arrives.
	var dials []<-chan dialResult
	for range admitted {
		dials = append(dials, dialAsync(h.url, h.mintWith(nil, "echo", "ok")))
		pods.waitEntered(t, 1)
	}
	if n := lim.Open(); n != 0 {
		t.Errorf("%d connections counted as pending with %d requests in admission, want 0", n, admitted)
	}
	// Header-less connections past the limit: the oldest of them is closed.
	var raw []net.Conn
	for range headerless {
		c, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		raw = append(raw, c)
	}
	raw[0].SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := raw[0].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("the oldest header-less connection past the limit: %v, want closed by the server (EOF)", err)
	}
	if n := lim.Open(); n != limit {
		t.Errorf("%d connections counted after the eviction, want %d (the newest header-less ones)", n, limit)
	}

	pods.open()
	for i, ch := range dials {
		r := dialResult{}.await(t, ch)
		if r.err != nil {
			t.Fatalf("admitted request %d of %d: %v (status %d %s)", i+1, admitted, r.err, r.status, r.body)
		}
		out, status := readAll(t, r.ws, DefaultMaxFrameSize, binaryFrame)
		if string(out) != "ok\n" || status != `{"metadata":{},"status":"Success"}` {
			t.Errorf("admitted session %d: output %q, status %s", i+1, out, status)
		}
	}
	if recs, _ := h.log.records("connection evicted"); len(recs) != 1 {
		t.Errorf("%d evictions logged, want 1 (the oldest header-less connection): %v", len(recs), recs)
	}
}

// TestAdmissionLimit: past --max-admissions a session request (and
// kubectl's GET of the pod) gets 429 with Retry-After and a TooManyRequests
// Status, logged with its reason, and its token stays usable; a place is
// given back at the upgrade, not when the session ends.
func TestAdmissionLimit(t *testing.T) {
	t.Parallel()
	const max = 3
	h, pods := heldHarness(t, max)
	limitedServer(t, h, 16)

	var held []<-chan dialResult
	for range max {
		held = append(held, dialAsync(h.url, h.mintWith(func(c *hmac.Claims) { c.Stdin = true }, "cat")))
	}
	pods.waitEntered(t, max)

	tok := h.mintWith(nil, "echo", "retried")
	r := dialResult{}.await(t, dialAsync(h.url, tok))
	if r.ws != nil || r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" {
		t.Fatalf("request past the admission limit: status %d, Retry-After %q, err %v", r.status, r.header.Get("Retry-After"), r.err)
	}
	var st metav1.Status
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	if st.Kind != "Status" || st.Reason != metav1.StatusReasonTooManyRequests || st.Code != http.StatusTooManyRequests ||
		st.Details == nil || st.Details.RetryAfterSeconds != 1 || !strings.Contains(st.Message, "limit of 3 requests") {
		t.Errorf("Status %+v", st)
	}
	rec := h.log.wait(t, 10*time.Second, "session rejected")
	if rec["reason"] != "too_many_admissions" || rec["status"] != float64(http.StatusTooManyRequests) {
		t.Errorf("refusal logged as %v", rec)
	}
	// kubectl's GET of the pod waits on the API server too.
	req, _ := http.NewRequest(http.MethodGet, h.url+"/api/v1/namespaces/ns/pods/pod", nil)
	req.Header = bearerHeader(tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("GET pod past the admission limit: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	// The held sessions are upgraded and stay open (cat): their places
	// are free, so the refused token and two more get sessions now.
	pods.open()
	var open []*websocket.Conn
	for i, ch := range held {
		r := dialResult{}.await(t, ch)
		if r.err != nil {
			t.Fatalf("held request %d: %v (status %d %s)", i+1, r.err, r.status, r.body)
		}
		open = append(open, r.ws)
	}
	for i, tok := range []string{tok, h.mintWith(nil, "echo", "retried"), h.mintWith(nil, "echo", "retried")} {
		r := dialResult{}.await(t, dialAsync(h.url, tok))
		if r.err != nil {
			t.Fatalf("request %d with %d sessions open: %v (status %d %s)", i+1, max, r.err, r.status, r.body)
		}
		if out, _ := readAll(t, r.ws, DefaultMaxFrameSize, binaryFrame); string(out) != "retried\n" {
			t.Errorf("request %d: output %q", i+1, out)
		}
	}
	for _, ws := range open {
		ws.WriteMessage(websocket.BinaryMessage, []byte{chanClose, chanStdin})
		if _, status := readAll(t, ws, DefaultMaxFrameSize, binaryFrame); status != `{"metadata":{},"status":"Success"}` {
			t.Errorf("held session: status %s", status)
		}
	}
	if n := h.srv.admitting.Load(); n != 0 {
		t.Errorf("%d admissions counted with none under way", n)
	}
}

// chanListener hands out the connections sent on it.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { close(l.done); return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// TestConnLimiterEvictsLongestWaiting: at the limit the connection that has
// waited longest is closed; one whose request has just arrived whole counts
// as the newest, so the window between reading its headers and its handler
// entering admission is not where it dies (the load test lost sessions
// there), and a released connection (hijacked) is never evicted.
func TestConnLimiterEvictsLongestWaiting(t *testing.T) {
	t.Parallel()
	lim, err := NewConnLimiter("sessions", 2, slog.New(slog.NewJSONHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
	ln := lim.Listener(raw)
	defer ln.Close()
	accept := func() (net.Conn, net.Conn) {
		t.Helper()
		server, client := net.Pipe()
		t.Cleanup(func() { server.Close(); client.Close() })
		go func() { raw.conns <- server }()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c, client
	}
	closed := func(client net.Conn) bool {
		client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := client.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}
	a, aClient := accept()
	_, bClient := accept()
	lim.ConnState(a, http.StateActive) // a's request arrived: a is the newest now
	_, cClient := accept()
	if !closed(bClient) || closed(aClient) || closed(cClient) {
		t.Fatalf("at the limit: b closed %v, a closed %v, c closed %v; want only b (waiting longest)", closed(bClient), closed(aClient), closed(cClient))
	}
	lim.ConnState(a, http.StateHijacked) // a session: no longer counted
	_, dClient := accept()
	if lim.Open() != 2 || closed(cClient) || closed(dClient) || closed(aClient) {
		t.Fatalf("after a's upgrade: %d counted, c closed %v, d closed %v, a closed %v; want 2 and none", lim.Open(), closed(cClient), closed(dClient), closed(aClient))
	}
}
