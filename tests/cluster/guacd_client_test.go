package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// guacdMaxRead is guacd's read size: every server message must fit in it,
// channel byte included (see docs of the guacd facts in shared/reference).
const guacdMaxRead = 4096

// guacd is a client that behaves on the wire as guacd 1.6 does: the token in
// the pod segment, only Host and Origin headers, only v4.channel.k8s.io
// offered, stdin in messages of at most 1024 bytes, a resize as size+1 then
// size on connect, and every server message treated as channel byte +
// payload. Unlike guacd it also keeps channel 3, so tests can read the exit
// status the proxy sends.
type guacd struct {
	ws *websocket.Conn

	mu        sync.Mutex
	out       bytes.Buffer // channels 1 and 2, as guacd writes both to the terminal
	status    []byte       // last channel 3 payload
	violation error        // first message guacd could not handle
	readErr   error        // why reading ended
	changed   chan struct{}
	done      chan struct{}
}

// guacdEscape escapes a path or query value as guacd does.
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

func dialGuacd(addr, namespace, token, container, command string) (*guacd, *http.Response, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	path := "/api/v1/namespaces/" + guacdEscape(namespace) + "/pods/" + guacdEscape(token)
	if command != "" {
		// guacd 1.6.0: the whole command line as one value.
		path += "/exec?command=" + guacdEscape(command) + "&container=" + guacdEscape(container) + "&stdin=true&stdout=true&tty=true"
	} else {
		path += "/attach?container=" + guacdEscape(container) + "&stdin=true&stdout=true&tty=true"
	}
	if len(path) >= 1024 {
		return nil, nil, fmt.Errorf("guacd cannot send a %d-byte request line", len(path))
	}
	d := websocket.Dialer{
		Subprotocols:     []string{"v4.channel.k8s.io"},
		HandshakeTimeout: 30 * time.Second,
		NetDial:          func(network, _ string) (net.Conn, error) { return net.Dial(network, addr) },
	}
	ws, resp, err := d.Dial("ws://"+host+path, http.Header{"Origin": {"http://" + host}})
	if err != nil {
		return nil, resp, err
	}
	g := &guacd{ws: ws, done: make(chan struct{})}
	go g.read()
	return g, resp, nil
}

func (g *guacd) read() {
	defer close(g.done)
	for {
		_, msg, err := g.ws.ReadMessage()
		g.mu.Lock()
		switch {
		case err != nil:
			g.readErr = err
		case len(msg) == 0:
			g.note(errors.New("empty message (guacd computes length -1)"))
		case len(msg) > guacdMaxRead:
			g.note(fmt.Errorf("%d-byte message; guacd reads %d and takes the next piece's first byte as a channel", len(msg), guacdMaxRead))
		case msg[0] == 1 || msg[0] == 2:
			g.out.Write(msg[1:])
		case msg[0] == 3:
			g.status = append([]byte(nil), msg[1:]...)
		}
		if g.changed != nil {
			close(g.changed)
			g.changed = nil
		}
		g.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (g *guacd) note(err error) {
	if g.violation == nil {
		g.violation = err
	}
}

// send writes stdin as guacd does: at most 1024 payload bytes per message.
func (g *guacd) send(t testing.TB, s string) {
	t.Helper()
	for b := []byte(s); len(b) > 0; {
		n := min(len(b), 1024)
		if err := g.ws.WriteMessage(websocket.BinaryMessage, append([]byte{0}, b[:n]...)); err != nil {
			t.Fatalf("sending stdin: %v", err)
		}
		b = b[n:]
	}
}

// resize sends guacd's connect-time pair: one column and row more, then the
// real size.
func (g *guacd) resize(t testing.TB, cols, rows int) {
	t.Helper()
	for _, d := range []int{1, 0} {
		msg := fmt.Appendf([]byte{4}, `{"Width":%d,"Height":%d}`, cols+d, rows+d)
		if err := g.ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatalf("sending resize: %v", err)
		}
	}
}

func (g *guacd) output() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.out.String()
}

func (g *guacd) changes() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.changed == nil {
		g.changed = make(chan struct{})
	}
	return g.changed
}

// waitOutput waits until the terminal output contains s.
func (g *guacd) waitOutput(t testing.TB, s string, within time.Duration) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		ch := g.changes()
		if strings.Contains(g.output(), s) {
			return
		}
		select {
		case <-ch:
		case <-g.done:
			if !strings.Contains(g.output(), s) {
				t.Fatalf("session ended (%v) without output %q; got %q", g.readErr, s, tail(g.output(), 500))
			}
			return
		case <-deadline.C:
			t.Fatalf("no output %q within %s; got %q", s, within, tail(g.output(), 500))
		}
	}
}

// waitEnd waits for the server to end the session and returns why reading
// stopped (a *websocket.CloseError for a clean close).
func (g *guacd) waitEnd(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case <-g.done:
	case <-time.After(within):
		t.Fatalf("session still open after %s", within)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.readErr
}

// drop leaves as guacd does when its user goes: no close frame, the TCP
// connection just ends.
func (g *guacd) drop() {
	_ = g.ws.NetConn().Close()
	<-g.done
}

func (g *guacd) problems() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.violation
}

func (g *guacd) exitStatus() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return string(g.status)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
