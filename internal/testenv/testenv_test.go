package testenv

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestGuacdEscape(t *testing.T) {
	for in, want := range map[string]string{
		"team-a":        "team-a",
		"a.b_c~d*e'(f)": "a.b_c~d*e'(f)",
		"/bin/sh -c x":  "%2Fbin%2Fsh%20-c%20x",
		"a+b=c&d?e#f":   "a%2Bb%3Dc%26d%3Fe%23f",
		"é":             "%C3%A9",
		"":              "",
	} {
		if got := GuacdEscape(in); got != want {
			t.Errorf("GuacdEscape(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzGuacdEscape(f *testing.F) {
	f.Add("/bin/sh -c 'exit 7'")
	f.Fuzz(func(t *testing.T, s string) {
		out := GuacdEscape(s)
		for i := 0; i < len(out); i++ {
			c := out[i]
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-_.!~*'()%", c) >= 0) {
				t.Fatalf("GuacdEscape(%q) = %q: byte %q passed unescaped", s, out, c)
			}
		}
		back, err := url.PathUnescape(out)
		if err != nil || back != s {
			t.Fatalf("GuacdEscape(%q) = %q, which unescapes to %q, %v", s, out, back, err)
		}
	})
}

func TestGuacdPath(t *testing.T) {
	p, err := GuacdPath("ns", "a.b.c", "shell", "/bin/sh -l")
	if want := "/api/v1/namespaces/ns/pods/a.b.c/exec?command=%2Fbin%2Fsh%20-l&container=shell&stdin=true&stdout=true&tty=true"; err != nil || p != want {
		t.Errorf("exec path %q, %v; want %q", p, err, want)
	}
	p, err = GuacdPath("ns", "tok", "shell", "")
	if want := "/api/v1/namespaces/ns/pods/tok/attach?container=shell&stdin=true&stdout=true&tty=true"; err != nil || p != want {
		t.Errorf("attach path %q, %v; want %q", p, err, want)
	}
	// The request line must fit guacd's 1024-byte buffer: 1023 passes,
	// 1024 does not.
	base, _ := GuacdPath("ns", "", "shell", "")
	if p, err := GuacdPath("ns", strings.Repeat("t", 1023-len(base)), "shell", ""); err != nil || len(p) != 1023 {
		t.Errorf("a %d-byte path: %v", len(p), err)
	}
	if _, err := GuacdPath("ns", strings.Repeat("t", 1024-len(base)), "shell", ""); err == nil {
		t.Error("a 1024-byte path was accepted")
	}
	if _, _, err := DialGuacd("127.0.0.1:1", "ns", strings.Repeat("t", 2000), "shell", "sh"); err == nil || !strings.Contains(err.Error(), "request line") {
		t.Errorf("dialing with a 2000-byte token: %v", err)
	}
}

// guacdServer answers one guacd session with messages, then closes
// normally, after recording what the client sent and how.
type guacdServer struct {
	*httptest.Server
	mu       sync.Mutex
	req      *http.Request
	received [][]byte
	ended    chan struct{}
}

func newGuacdServer(t *testing.T, reply func(ws *websocket.Conn)) *guacdServer {
	s := &guacdServer{ended: make(chan struct{})}
	up := websocket.Upgrader{Subprotocols: []string{"v5.channel.k8s.io", "v4.channel.k8s.io"}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(s.ended)
		s.mu.Lock()
		s.req = r
		s.mu.Unlock()
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		reply(ws)
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.received = append(s.received, msg)
			s.mu.Unlock()
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func closeNormally(ws *websocket.Conn) {
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
}

func TestGuacdClient(t *testing.T) {
	srv := newGuacdServer(t, func(ws *websocket.Conn) {
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte("\x01hello "))
		_ = ws.WriteMessage(websocket.BinaryMessage, []byte("\x02world"))
		_ = ws.WriteMessage(websocket.BinaryMessage, append([]byte{3}, `{"status":"Success"}`...))
	})
	addr := strings.TrimPrefix(srv.URL, "http://")
	g, resp, err := DialGuacd(addr, "ns", "tok", "shell", "sh")
	if err != nil {
		t.Fatal(err)
	}
	if g.Conn().Subprotocol() != "v4.channel.k8s.io" {
		t.Errorf("negotiated %q", g.Conn().Subprotocol())
	}
	resp.Body.Close()
	g.WaitOutput(t, "hello world", 10*time.Second)
	// The status follows the output; read it before leaving, or the drop
	// below may race it.
	g.WaitStatus(t, 10*time.Second)
	g.Resize(t, 80, 24)
	g.Send(t, strings.Repeat("x", 2500))
	g.Drop()
	<-srv.ended
	if err := g.Problems(); err != nil {
		t.Error(err)
	}
	if got := g.ExitStatus(); got != `{"status":"Success"}` {
		t.Errorf("status %q", got)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	// Only Host and Origin (and the handshake's own headers) are sent.
	for name := range srv.req.Header {
		switch name {
		case "Origin", "Connection", "Upgrade", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol":
		default:
			t.Errorf("header %s sent", name)
		}
	}
	if o := srv.req.Header.Get("Origin"); o != "http://127.0.0.1" || srv.req.Host != "127.0.0.1" {
		t.Errorf("Origin %q, Host %q", o, srv.req.Host)
	}
	var got []string
	for _, m := range srv.received {
		got = append(got, fmt.Sprintf("%d:%d", m[0], len(m)-1))
	}
	want := "4:24 4:24 0:1024 0:1024 0:452"
	if strings.Join(got, " ") != want {
		t.Errorf("client sent (channel:payload length) %q, want %q", strings.Join(got, " "), want)
	}
	if string(srv.received[0][1:]) != `{"Width":81,"Height":25}` || string(srv.received[1][1:]) != `{"Width":80,"Height":24}` {
		t.Errorf("resizes %q, %q", srv.received[0][1:], srv.received[1][1:])
	}
}

func TestGuacdClientFlagsUnreadableMessages(t *testing.T) {
	for name, c := range map[string]struct {
		mt   int
		msg  []byte
		want string
	}{
		"empty":     {websocket.BinaryMessage, nil, "empty message"},
		"too long":  {websocket.BinaryMessage, append([]byte{1}, make([]byte, GuacdMaxRead)...), "4097-byte message"},
		"text":      {websocket.TextMessage, []byte("\x01hi"), "binary messages only"},
		"4096 fits": {websocket.BinaryMessage, append([]byte{1}, make([]byte, GuacdMaxRead-1)...), ""},
	} {
		t.Run(name, func(t *testing.T) {
			srv := newGuacdServer(t, func(ws *websocket.Conn) {
				_ = ws.WriteMessage(c.mt, c.msg)
				closeNormally(ws)
			})
			g, _, err := DialGuacd(strings.TrimPrefix(srv.URL, "http://"), "ns", "tok", "shell", "")
			if err != nil {
				t.Fatal(err)
			}
			err = g.WaitEnd(t, 10*time.Second)
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
				t.Errorf("end: %v, want a normal close", err)
			}
			g.Drop()
			<-srv.ended
			p := g.Problems()
			switch {
			case c.want == "" && p != nil:
				t.Errorf("flagged: %v", p)
			case c.want != "" && (p == nil || !strings.Contains(p.Error(), c.want)):
				t.Errorf("problems %v, want %q", p, c.want)
			}
		})
	}
}

func TestParseMetric(t *testing.T) {
	text := "# HELP go_goroutines x\ngo_goroutines_total 99\ngo_goroutines 12\nk8s_ws_proxy_sessions_active{otel_scope_name=\"x\"} 3\n"
	if v, err := ParseMetric(text, "go_goroutines"); err != nil || v != 12 {
		t.Errorf("go_goroutines: %v, %v", v, err)
	}
	if v, err := ParseMetric(text, "k8s_ws_proxy_sessions_active"); err != nil || v != 3 {
		t.Errorf("labelled series: %v, %v", v, err)
	}
	if _, err := ParseMetric(text, "go_gor"); err == nil {
		t.Error("a prefix of a name matched")
	}
}

// fakeProxy is a shell standing in for the binary: it logs what the
// proxy logs when it starts, then the lines given, then waits.
func fakeProxy(lines ...string) ProxyOptions {
	script := `echo '{"msg":"listening","address":"127.0.0.1:1","health_address":"127.0.0.1:2"}' >&2`
	for _, l := range lines {
		script += "; echo '" + l + "' >&2"
	}
	return ProxyOptions{Bin: "/bin/sh", Args: []string{"-c", script + "; exec sleep 60"}}
}

func TestProxyLog(t *testing.T) {
	p := StartProxy(t, fakeProxy(`{"msg":"session closed","reason":"a"}`, `not json: TLS handshake error`, `{"msg":"session closed","reason":"b"}`))
	if p.Addr != "127.0.0.1:1" || p.Health != "127.0.0.1:2" {
		t.Errorf("addresses %q, %q", p.Addr, p.Health)
	}
	m := p.WaitLog(10*time.Second, "session closed", func(m map[string]any) bool { return m["reason"] == "b" })
	if m["reason"] != "b" || len(p.LogLines("session closed")) != 2 {
		t.Errorf("got %v; log:\n%s", m, p.LogText())
	}
	if line := p.WaitLogText(10*time.Second, 1, "TLS", "handshake"); line != "not json: TLS handshake error" {
		t.Errorf("WaitLogText: %q", line)
	}
	if p.LogMark() != 4 || strings.Count(p.LogText(), "\n") != 4 {
		t.Errorf("mark %d; log:\n%s", p.LogMark(), p.LogText())
	}
	if p.ExitState() != nil {
		t.Error("exit state before the exit")
	}
	p.Stop()
	<-p.Exited()
	if st := p.ExitState(); st == nil || st.Success() {
		t.Errorf("exit state %v after SIGINT", st)
	}
}

// errorsTB records Errorf calls instead of failing.
type errorsTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (e *errorsTB) Errorf(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, fmt.Sprintf(format, args...))
}

func TestProxyRaceReportFails(t *testing.T) {
	tb := &errorsTB{TB: t}
	o := fakeProxy("==================", "WARNING: DATA RACE", "Write at 0x00c000 by goroutine 7:")
	o.KeepLines = 1 // the report is seen even when its line is not kept
	p := StartProxy(tb, o)
	p.WaitLogText(10*time.Second, 0, "goroutine 7")
	p.Stop()
	p.Stop()
	if len(tb.errs) != 1 || !strings.Contains(tb.errs[0], "data race") {
		t.Errorf("errors %q, want one data race report", tb.errs)
	}
}

func TestLogBufferKeepsTail(t *testing.T) {
	b := &logBuffer{keep: 2}
	for _, l := range []string{"a", "b", "c"} {
		b.add(l)
	}
	if b.String() != "b\nc\n" || b.count() != 3 {
		t.Errorf("%q, count %d", b.String(), b.count())
	}
	if got := b.since(0); len(got) != 2 {
		t.Errorf("since(0) = %q", got)
	}
	if got := b.since(2); len(got) != 1 || got[0] != "c" {
		t.Errorf("since(2) = %q", got)
	}
	if got := b.since(5); len(got) != 0 {
		t.Errorf("since(5) = %q", got)
	}
}

func TestExecURL(t *testing.T) {
	c := Claims(Target{Namespace: "ns", Pod: "p", Container: "c", Node: "n"}, "sh", "-c", "echo a&b")
	c.Stdin, c.TTY = true, false
	if got, want := ExecURL("127.0.0.1:9", c, true), "http://127.0.0.1:9/api/v1/namespaces/ns/pods/p/exec?command=sh&command=-c&command=echo+a%26b&container=c&stderr=true&stdin=true&stdout=true&tty=false"; got != want {
		t.Errorf("exec URL\n%s, want\n%s", got, want)
	}
	c.Command, c.Stdin, c.TTY = nil, false, true
	if got, want := ExecURL("127.0.0.1:9", c, false), "http://127.0.0.1:9/api/v1/namespaces/ns/pods/p/attach?container=c&stderr=false&stdin=false&stdout=true&tty=true"; got != want {
		t.Errorf("attach URL\n%s, want\n%s", got, want)
	}
}
