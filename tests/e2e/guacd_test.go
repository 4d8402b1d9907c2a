package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// watchBuffer is an output sink tests can wait on.
type watchBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func (w *watchBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.changed != nil {
		close(w.changed)
		w.changed = nil
	}
	return w.b.Write(p)
}

func (w *watchBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *watchBuffer) changes() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.changed == nil {
		w.changed = make(chan struct{})
	}
	return w.changed
}

func (w *watchBuffer) waitFor(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		ch := w.changes()
		if strings.Contains(w.String(), s) {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("output never contained %q; got %q", s, w.String())
		}
	}
}

func (w *watchBuffer) waitForChange(d time.Duration) {
	select {
	case <-w.changes():
	case <-time.After(d):
	}
}

// guacdEscape escapes a path or query value exactly as guacd does: bytes
// A-Za-z0-9-_.!~*'() pass, everything else becomes %XX.
func guacdEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// guacdConn is a client that does exactly what guacd 1.6 does on the wire:
// no headers but Host and Origin, only v4 offered, the token in the pod
// segment, stdin in messages of at most 1024 bytes, two resizes on
// connect, and leaving by dropping the TCP connection without a close frame.
type guacdConn struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan []byte // every message received, in order
	done   chan struct{}
}

func dialGuacd(t *testing.T, addr, namespace, token, container, command string) (*guacdConn, *http.Response, error) {
	t.Helper()
	host, _, _ := net.SplitHostPort(addr)
	path := "/api/v1/namespaces/" + guacdEscape(namespace) + "/pods/" + guacdEscape(token)
	if command != "" {
		// guacd 1.6.0 sends the whole command line as one value.
		path += "/exec?command=" + guacdEscape(command) + "&container=" + guacdEscape(container) + "&stdin=true&stdout=true&tty=true"
	} else {
		path += "/attach?container=" + guacdEscape(container) + "&stdin=true&stdout=true&tty=true"
	}
	if len(path) >= 1024 {
		t.Fatalf("guacd cannot send a request line of %d bytes", len(path))
	}
	d := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}, HandshakeTimeout: 10 * time.Second,
		NetDial: func(network, _ string) (net.Conn, error) { return net.Dial(network, addr) }}
	hdr := http.Header{"Origin": {"http://" + host}}
	ws, resp, err := d.Dial("ws://"+host+path, hdr)
	if err != nil {
		return nil, resp, err
	}
	g := &guacdConn{t: t, ws: ws, frames: make(chan []byte, 100000), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		for {
			mt, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if mt != websocket.BinaryMessage {
				t.Errorf("got a non-binary message type %d", mt)
			}
			g.frames <- msg
		}
	}()
	return g, resp, nil
}

func (g *guacdConn) send(channel byte, payload []byte) {
	if err := g.ws.WriteMessage(websocket.BinaryMessage, append([]byte{channel}, payload...)); err != nil {
		g.t.Fatalf("send: %v", err)
	}
}

// typeText sends stdin the way guacd does: at most 1024 bytes a message.
func (g *guacdConn) typeText(s string) {
	for len(s) > 0 {
		n := min(len(s), 1024)
		g.send(0, []byte(s[:n]))
		s = s[n:]
	}
}

func (g *guacdConn) resize(w, h int) {
	g.send(4, []byte(fmt.Sprintf(`{"Width":%d,"Height":%d}`, w, h)))
}

// leave drops the connection the way guacd's killed process does: no
// close frame, just EOF.
func (g *guacdConn) leave() {
	g.ws.NetConn().Close()
	<-g.done
}

// readUntil collects terminal output (channels 1 and 2, as guacd writes
// both to the screen) until it contains want, checking guacd's frame
// limits on every message.
func (g *guacdConn) readUntil(want string, out *strings.Builder) {
	g.t.Helper()
	timeout := time.After(30 * time.Second)
	for !strings.Contains(out.String(), want) {
		select {
		case f := <-g.frames:
			g.checkFrame(f)
			if f[0] == 1 || f[0] == 2 {
				out.Write(f[1:])
			}
		case <-g.done:
			g.t.Fatalf("connection ended before %q; output %q", want, out.String())
		case <-timeout:
			g.t.Fatalf("never saw %q; output %q", want, out.String())
		}
	}
}

func (g *guacdConn) checkFrame(f []byte) {
	g.t.Helper()
	if len(f) == 0 {
		g.t.Fatal("server sent an empty frame (guacd computes length -1)")
	}
	if len(f) > 4096 {
		g.t.Fatalf("server sent a %d-byte frame; guacd reads at most 4096", len(f))
	}
}

func TestGuacdShapedClient(t *testing.T) {
	e := startEnv(t, envOptions{})
	c := e.claims("/bin/sh")
	c.TTY, c.Stdin = true, true
	g, resp, err := dialGuacd(t, e.addr, c.Namespace, e.mint(c), c.Container, "/bin/sh")
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	if got := resp.Header.Get("Sec-Websocket-Protocol"); got != "v4.channel.k8s.io" {
		t.Fatalf("negotiated %q, want v4.channel.k8s.io", got)
	}
	// guacd's double resize on connect: real size + 1, then the real size.
	g.resize(81, 25)
	g.resize(80, 24)
	var out strings.Builder
	g.typeText("e")
	g.typeText("cho ready-$((6*7))\r")
	g.readUntil("ready-42", &out)
	g.typeText("stty size\r")
	g.readUntil("24 80", &out)

	// A burst bigger than one frame: 64 KiB of output through a tty must
	// arrive whole, in frames guacd can read.
	g.typeText("head -c 65536 /dev/zero | tr '\\0' x; echo END-$((1+1))-BURST\r")
	g.readUntil("END-2-BURST", &out)
	if n := strings.Count(out.String(), "x"); n < 65536 {
		t.Fatalf("burst lost bytes: %d of 65536", n)
	}
	// A long pasted line arrives in 1024-byte messages, as guacd sends it.
	long := strings.Repeat("y", 3000)
	g.typeText("echo " + long + " | wc -c\r")
	g.readUntil("3001", &out)

	// Remember the shell's process, then leave as guacd does.
	before := e.backend.PIDs()
	if len(before) == 0 {
		t.Fatal("backend reports no running process for the live session")
	}
	g.leave()
	waitFor(t, 2*time.Second, "the exec's processes are gone after guacd left", func() bool {
		return len(e.backend.PIDs()) == 0
	})
	closed := e.waitLog(10*time.Second, "session closed", nil)
	if closed["reason"] != "client_gone" {
		t.Errorf("close reason %v, want client_gone", closed["reason"])
	}
}

func TestGuacdExitClosesCleanly(t *testing.T) {
	e := startEnv(t, envOptions{})
	c := e.claims("/bin/sh", "-c", "exit 7")
	c.TTY, c.Stdin = true, true
	// guacd 1.6.0 sends the whole command line as one value.
	g, _, err := dialGuacd(t, e.addr, c.Namespace, e.mint(c), c.Container, "/bin/sh -c exit 7")
	if err != nil {
		t.Fatal(err)
	}
	var status []byte
	timeout := time.After(30 * time.Second)
	for status == nil {
		select {
		case f := <-g.frames:
			g.checkFrame(f)
			if f[0] == 3 {
				status = f[1:]
			}
		case <-timeout:
			t.Fatal("no status frame")
		}
	}
	want := `"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}`
	if !strings.Contains(string(status), want) {
		t.Fatalf("status %s does not carry exit code 7", status)
	}
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not close after the status")
	}
}
