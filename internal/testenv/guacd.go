package testenv

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
	streamproto "k8s.io/apimachinery/pkg/util/remotecommand"
)

// GuacdMaxRead is guacd's read size: every server message must fit in it,
// channel byte included (see the guacd facts in shared/reference).
const GuacdMaxRead = 4096

// guacdMaxRequestPath: guacd builds the request line in a 1024-byte buffer.
const guacdMaxRequestPath = 1024

// Guacd is a client that behaves on the wire as guacd 1.6 does: the token
// in the pod segment, only Host and Origin headers, only v4.channel.k8s.io
// offered, stdin in messages of at most 1024 bytes, a resize as size+1 then
// size on connect, every server message treated as channel byte + payload,
// and leaving by dropping the TCP connection without a close frame. Unlike
// guacd it also keeps channel 3, so tests can read the exit status the
// proxy sends, and it records the first message guacd could not have
// handled (Problems).
type Guacd struct {
	ws *websocket.Conn

	mu        sync.Mutex
	out       bytes.Buffer // channels 1 and 2, as guacd writes both to the terminal
	status    []byte       // last channel 3 payload
	violation error        // first message guacd could not handle
	readErr   error        // why reading ended
	changed   Changed
	done      chan struct{}
}

// GuacdEscape escapes a path or query value exactly as guacd does: bytes
// A-Za-z0-9-_.!~*'() pass, everything else becomes %XX.
func GuacdEscape(s string) string {
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

// GuacdPath is the request path guacd sends: exec with the whole command
// line as one value (guacd 1.6.0), or attach when command is empty. It
// fails where guacd could not send the request line.
func GuacdPath(namespace, token, container, command string) (string, error) {
	path := "/api/v1/namespaces/" + GuacdEscape(namespace) + "/pods/" + GuacdEscape(token)
	if command != "" {
		path += "/exec?command=" + GuacdEscape(command) + "&container=" + GuacdEscape(container) + "&stdin=true&stdout=true&tty=true"
	} else {
		path += "/attach?container=" + GuacdEscape(container) + "&stdin=true&stdout=true&tty=true"
	}
	if len(path) >= guacdMaxRequestPath {
		return "", fmt.Errorf("guacd cannot send a %d-byte request line", len(path))
	}
	return path, nil
}

// DialGuacd opens a session at addr as guacd would, the hostname parameter
// being addr's host.
func DialGuacd(addr, namespace, token, container, command string) (*Guacd, *http.Response, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	path, err := GuacdPath(namespace, token, container, command)
	if err != nil {
		return nil, nil, err
	}
	d := websocket.Dialer{
		Subprotocols:     []string{streamproto.StreamProtocolV4Name},
		HandshakeTimeout: 30 * time.Second,
		NetDial:          func(network, _ string) (net.Conn, error) { return net.Dial(network, addr) },
	}
	// An empty User-Agent keeps net/http from adding its own: guacd sends
	// none.
	ws, resp, err := d.Dial("ws://"+host+path, http.Header{"Origin": {"http://" + host}, "User-Agent": {""}})
	if err != nil {
		return nil, resp, err
	}
	g := &Guacd{ws: ws, done: make(chan struct{})}
	go g.read()
	return g, resp, nil
}

// Conn is the WebSocket connection, for what the handshake negotiated.
func (g *Guacd) Conn() *websocket.Conn { return g.ws }

func (g *Guacd) read() {
	defer close(g.done)
	for {
		mt, msg, err := g.ws.ReadMessage()
		g.mu.Lock()
		switch {
		case err != nil:
			g.readErr = err
		case mt != websocket.BinaryMessage:
			g.note(fmt.Errorf("message of type %d; guacd handles binary messages only", mt))
		case len(msg) == 0:
			g.note(errors.New("empty message (guacd computes length -1)"))
		case len(msg) > GuacdMaxRead:
			g.note(fmt.Errorf("%d-byte message; guacd reads %d and takes the next piece's first byte as a channel", len(msg), GuacdMaxRead))
		case msg[0] == 1 || msg[0] == 2:
			g.out.Write(msg[1:])
		case msg[0] == 3:
			g.status = append([]byte(nil), msg[1:]...)
		}
		g.changed.Fire()
		g.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (g *Guacd) note(err error) {
	if g.violation == nil {
		g.violation = err
	}
}

// Send writes stdin as guacd does: at most 1024 payload bytes per message.
func (g *Guacd) Send(tb testing.TB, s string) {
	tb.Helper()
	for b := []byte(s); len(b) > 0; {
		n := min(len(b), 1024)
		if err := g.ws.WriteMessage(websocket.BinaryMessage, append([]byte{streamproto.StreamStdIn}, b[:n]...)); err != nil {
			tb.Fatalf("sending stdin: %v", err)
		}
		b = b[n:]
	}
}

// Resize sends guacd's connect-time pair: one column and row more, then
// the real size.
func (g *Guacd) Resize(tb testing.TB, cols, rows int) {
	tb.Helper()
	for _, d := range []int{1, 0} {
		msg := fmt.Appendf([]byte{streamproto.StreamResize}, `{"Width":%d,"Height":%d}`, cols+d, rows+d)
		if err := g.ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			tb.Fatalf("sending resize: %v", err)
		}
	}
}

// Output is the terminal output so far (channels 1 and 2).
func (g *Guacd) Output() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.out.String()
}

func (g *Guacd) changes() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed.Wait()
}

// WaitOutput waits until the terminal output contains s. A message guacd
// could not have handled fails tb as soon as it arrives.
func (g *Guacd) WaitOutput(tb testing.TB, s string, within time.Duration) {
	tb.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		ch := g.changes()
		if err := g.Problems(); err != nil {
			tb.Fatalf("waiting for %q: %v", s, err)
		}
		if strings.Contains(g.Output(), s) {
			return
		}
		select {
		case <-ch:
		case <-g.done:
			if err := g.Problems(); err != nil {
				tb.Fatalf("waiting for %q: %v", s, err)
			}
			if !strings.Contains(g.Output(), s) {
				tb.Fatalf("session ended (%v) without output %q; got %q", g.readError(), s, Tail(g.Output(), 500))
			}
			return
		case <-deadline.C:
			tb.Fatalf("no output %q within %s; got %q", s, within, Tail(g.Output(), 500))
		}
	}
}

// WaitTerminalSize asks the shell for its size (stty size) until it reports
// rows and cols. A resize and the keystrokes that follow it travel on
// different streams (with SPDY, different streams to the kubelet too), so
// the shell may run a command before it sees the new size. Each try waits
// for a marker the shell computes, which the echoed input never matches.
func (g *Guacd) WaitTerminalSize(tb testing.TB, rows, cols int, within time.Duration) {
	tb.Helper()
	want := fmt.Sprintf("%d %d", rows, cols)
	for try := 1; !strings.Contains(g.Output(), want); try++ {
		if try > 50 {
			tb.Fatalf("terminal size %dx%d never seen; output %q", cols, rows, Tail(g.Output(), 500))
		}
		g.Send(tb, fmt.Sprintf("stty size; echo asked-%d-$((%d+1))\r", try, try))
		g.WaitOutput(tb, fmt.Sprintf("asked-%d-%d", try, try+1), within)
	}
}

func (g *Guacd) readError() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.readErr
}

// WaitEnd waits for the server to end the session and returns why reading
// stopped (a *websocket.CloseError for a clean close).
func (g *Guacd) WaitEnd(tb testing.TB, within time.Duration) error {
	tb.Helper()
	select {
	case <-g.done:
	case <-time.After(within):
		tb.Fatalf("session still open after %s", within)
	}
	return g.readError()
}

// Drop leaves as guacd does when its user goes: no close frame, the TCP
// connection just ends.
func (g *Guacd) Drop() {
	_ = g.ws.NetConn().Close()
	<-g.done
}

// Problems is the first server message guacd could not have handled, if
// any.
func (g *Guacd) Problems() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.violation
}

// WaitStatus waits for a channel 3 (status) message and returns it.
func (g *Guacd) WaitStatus(tb testing.TB, within time.Duration) string {
	tb.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		ch := g.changes()
		if st := g.ExitStatus(); st != "" {
			return st
		}
		select {
		case <-ch:
		case <-g.done:
			if st := g.ExitStatus(); st != "" {
				return st
			}
			tb.Fatalf("session ended (%v) without a status message", g.readError())
		case <-deadline.C:
			tb.Fatalf("no status message within %s", within)
		}
	}
}

// ExitStatus is the last channel 3 (status) payload.
func (g *Guacd) ExitStatus() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return string(g.status)
}

// Tail is the last n bytes of s, for failure messages.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
