package proxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
	"k8s.io/client-go/rest"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/localexec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// spdystream's shutdown holds a close error for up to its close
		// timeout (at least 1 s) when nobody reads it, then exits.
		goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Connection).shutdown"),
		// A stream whose SPDY connection closes before its reply (a harness
		// torn down while an exec still sets up) waits out spdystream's
		// fixed 30 s reply timeout: Serve's teardown never wakes it.
		goleak.IgnoreTopFunction("github.com/moby/spdystream.(*Stream).WaitTimeout"),
		// klog's flush daemon lives for the process, started by client-go.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		// Idle keep-alive connections of the shared HTTP transports.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		// client-go's WebSocket ping loop stops at its first failed ping,
		// up to one ping period (5 s) after a reset connection.
		goleak.IgnoreTopFunction("k8s.io/client-go/tools/remotecommand.(*heartbeat).start"),
	)
}

// harness runs the proxy in-process in front of the real local exec
// backend (the kubelet streaming server running real processes).
type harness struct {
	t       *testing.T
	srv     *Server
	url     string
	signer  *hmac.Signer
	backend *localexec.Server
	cut     *testnet.Cutter // between the proxy and the backend
	log     *lockedLines    // the proxy's log
}

func newHarness(t *testing.T, mod func(*Config)) *harness {
	return newHarnessVia(t, exec.TransportAuto, mod)
}

// newHarnessVia runs the proxy with the given exec transport toward the
// backend (auto means SPDY there: localexec has no v5).
func newHarnessVia(t *testing.T, tr exec.Transport, mod func(*Config)) *harness {
	t.Helper()
	return newHarnessOpts(t, tr, false, mod)
}

// newHarnessCut puts a cutter between the proxy and the backend. A
// userspace forwarder cannot pass on a reset while its writes toward a
// backend that does not read are blocked: tests of blocked stdin go direct.
func newHarnessCut(t *testing.T, tr exec.Transport, mod func(*Config)) *harness {
	t.Helper()
	return newHarnessOpts(t, tr, true, mod)
}

func newHarnessOpts(t *testing.T, tr exec.Transport, viaCutter bool, mod func(*Config)) *harness {
	t.Helper()
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	backend, err := localexec.NewServer(localexec.Config{Logger: quiet, Pods: []localexec.Pod{{
		Namespace: "ns", Name: "pod", NodeName: "node",
		Containers: []localexec.Container{{Name: "c"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	bs := httptest.NewServer(backend)
	t.Cleanup(func() { bs.Close(); backend.Close() })
	host := bs.URL
	var cut *testnet.Cutter
	if viaCutter {
		cut = testnet.NewCutter(t, strings.TrimPrefix(bs.URL, "http://"))
		host = "http://" + cut.Addr()
	}
	dialer, err := exec.NewDialer(&rest.Config{Host: host}, tr)
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{7}, 32)
	v, err := hmac.NewVerifier(hmac.VerifierOptions{Keys: hmac.StaticKeys(key)})
	if err != nil {
		t.Fatal(err)
	}
	lines := &lockedLines{}
	t.Cleanup(func() {
		if t.Failed() {
			lines.mu.Lock()
			t.Logf("proxy log:\n%s", lines.buf.String())
			lines.mu.Unlock()
		}
	})
	cfg := Config{Verifier: v, Executor: dialer, Pods: dialer, NodeName: "node", Logger: slog.New(slog.NewJSONHandler(lines, nil))}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ps := httptest.NewServer(srv)
	t.Cleanup(ps.Close)
	signer, err := hmac.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, srv: srv, url: ps.URL, signer: signer, backend: backend, cut: cut, log: lines}
}

func (h *harness) dial(protocol string, command ...string) *websocket.Conn {
	h.t.Helper()
	return h.dialClaims(protocol, func(*hmac.Claims) {}, command...)
}

func (h *harness) dialClaims(protocol string, mod func(*hmac.Claims), command ...string) *websocket.Conn {
	h.t.Helper()
	now := time.Now()
	c := hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
		Namespace:        "ns", Pod: "pod", Container: "c", Command: command, Stdin: true,
	}
	mod(&c)
	tok, err := h.signer.Sign(c)
	if err != nil {
		h.t.Fatal(err)
	}
	var protos []string
	if protocol != "" {
		protos = []string{protocol}
	}
	d := websocket.Dialer{Subprotocols: protos}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(h.url, "http")+"/api/v1/namespaces/ns/pods/pod/exec",
		http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		h.t.Fatalf("dial: %v (%v)", err, resp)
	}
	h.t.Cleanup(func() { ws.Close() })
	return ws
}

// readAll collects every frame until the close, checking each against the
// frame size limit.
func readAll(t *testing.T, ws *websocket.Conn, limit int, decode func(int, []byte) (byte, []byte)) (stdout []byte, status string) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		mt, msg, err := ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("ended with %v", err)
			}
			return stdout, status
		}
		if len(msg) == 0 || len(msg) > limit {
			t.Fatalf("frame of %d bytes; limit %d, never empty", len(msg), limit)
		}
		ch, payload := decode(mt, msg)
		switch ch {
		case 1:
			stdout = append(stdout, payload...)
		case 3:
			status = string(payload)
		}
	}
}

func binaryFrame(_ int, msg []byte) (byte, []byte) { return msg[0], msg[1:] }

func TestSessionFramesRespectLimit(t *testing.T) {
	t.Parallel()
	const limit = 100
	h := newHarness(t, func(c *Config) { c.MaxFrameSize = limit })
	seqInFrames(t, h, limit)
}

// seqInFrames runs seq 1 20000 over v5 with stdin closed and checks every
// frame is within limit, the output is whole and the status is Success.
func seqInFrames(t *testing.T, h *harness, limit int) {
	t.Helper()
	ws := h.dial(ProtocolV5, "seq", "1", "20000")
	ws.WriteMessage(websocket.BinaryMessage, []byte{chanClose, chanStdin})
	out, status := readAll(t, ws, limit, binaryFrame)
	var want bytes.Buffer
	for i := 1; i <= 20000; i++ {
		want.WriteString(strconv.Itoa(i) + "\n")
	}
	if !bytes.Equal(out, want.Bytes()) {
		t.Fatalf("got %d bytes of output, want %d", len(out), want.Len())
	}
	if status != `{"metadata":{},"status":"Success"}` {
		t.Fatalf("status %q", status)
	}
}

func TestSessionBase64Protocol(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ws := h.dial(ProtocolV4Base64, "sh", "-c", "printf '\\000\\001\\377'; exit 4")
	out, status := readAll(t, ws, DefaultMaxFrameSize, func(mt int, msg []byte) (byte, []byte) {
		if mt != websocket.TextMessage {
			t.Fatalf("base64 protocol sent message type %d", mt)
		}
		b, err := base64.StdEncoding.DecodeString(string(msg[1:]))
		if err != nil {
			t.Fatalf("invalid base64 frame %q", msg)
		}
		return msg[0] - '0', b
	})
	if !bytes.Equal(out, []byte{0, 1, 255}) {
		t.Fatalf("stdout %v", out)
	}
	if !strings.Contains(status, `"causes":[{"reason":"ExitCode","message":"4"}]`) {
		t.Fatalf("status %s", status)
	}
}

func TestSessionV1ErrorText(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ws := h.dial(ProtocolV1, "sh", "-c", "exit 2")
	_, status := readAll(t, ws, DefaultMaxFrameSize, binaryFrame)
	if !strings.Contains(status, "command terminated with non-zero exit code") || strings.HasPrefix(status, "{") {
		t.Fatalf("channel.k8s.io status should be bare error text, got %q", status)
	}
}

func TestDrainTerminatesSessions(t *testing.T) {
	h := newHarness(t, nil)
	echoThenDrain(t, h)
	if h.srv.Ready() {
		t.Fatal("ready while drained")
	}
}

// echoThenDrain runs cat over v4, checks one echo, drains the server with an
// expired grace and checks the session ends with 1001, a "shutting down"
// status, and no session is left.
func echoThenDrain(t *testing.T, h *harness) {
	t.Helper()
	ws := h.dial(ProtocolV4, "cat")
	echo(t, ws, "hi\n")
	expired, cancel := contextWithTimeout(0)
	defer cancel()
	done := make(chan struct{})
	go func() { h.srv.Drain(expired); close(done) }()
	_, status, err := testenv.ReadToClose(ws, websocket.CloseGoingAway, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if !strings.Contains(status, "shutting down") {
		t.Fatalf("status %q", status)
	}
	if n := h.srv.ActiveSessions(); n != 0 {
		t.Fatalf("%d sessions after drain", n)
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
