package e2e

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/apimachinery/pkg/util/wait"
)

// rawSession is an upgraded connection driven frame by frame.
type rawSession struct {
	t  *testing.T
	ws *websocket.Conn
}

// openCat opens a session running cat with stdin, so that anything
// written to stdin comes back on stdout.
func (e *env) openCat(t *testing.T, protocol string, tty bool) *rawSession {
	t.Helper()
	c := e.claims("cat")
	c.Stdin, c.TTY = true, tty
	q := "command=cat&container=" + testContainer
	status, body, ws := e.tryUpgrade(t, upgradeRequest{
		path:   "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?" + q,
		header: bearer(e.mint(c)), protocols: []string{protocol}})
	if ws == nil {
		t.Fatalf("opening a cat session: status %d: %s", status, body)
	}
	t.Cleanup(func() { ws.Close() })
	return &rawSession{t: t, ws: ws}
}

func (r *rawSession) send(mt int, msg []byte) {
	r.t.Helper()
	if err := r.ws.WriteMessage(mt, msg); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// echo proves the session still works: a line through cat comes back.
func (r *rawSession) echo(line string) {
	r.t.Helper()
	r.send(websocket.BinaryMessage, append([]byte{0}, line+"\n"...))
	var got strings.Builder
	r.ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	defer r.ws.SetReadDeadline(time.Time{})
	for !strings.Contains(got.String(), line) {
		_, msg, err := r.ws.ReadMessage()
		if err != nil {
			r.t.Fatalf("session broke before echoing %q: %v", line, err)
		}
		if len(msg) > 0 && (msg[0] == 1 || msg[0] == 2) {
			got.Write(msg[1:])
		}
	}
}

// closedWith reads until the connection closes and returns the close code
// and the status frame seen on channel 3, if any.
func (r *rawSession) closedWith() (int, string) {
	r.t.Helper()
	r.ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	var status string
	for {
		_, msg, err := r.ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, status
		}
		if err != nil {
			r.t.Fatalf("connection ended without a close frame: %v", err)
		}
		if len(msg) > 0 && msg[0] == 3 {
			status = string(msg[1:])
		}
	}
}

// TestBadFramesAfterUpgrade: protocol abuse by one client is ignored or
// ends that session with the right close code, and never another session.
func TestBadFramesAfterUpgrade(t *testing.T) {
	e := startEnv(t, envOptions{extraArgs: []string{"--max-message-size", "8192"}})
	bystander := e.openCat(t, "v5.channel.k8s.io", false)
	bystander.echo("bystander-before")

	ignored := []struct {
		name  string
		proto string
		tty   bool
		frame func(r *rawSession)
	}{
		{"unknown channel", "v4.channel.k8s.io", false, func(r *rawSession) { r.send(websocket.BinaryMessage, []byte{9, 'x'}) }},
		{"empty frame", "v4.channel.k8s.io", false, func(r *rawSession) { r.send(websocket.BinaryMessage, nil) }},
		{"channel byte only", "v4.channel.k8s.io", false, func(r *rawSession) { r.send(websocket.BinaryMessage, []byte{0}) }},
		{"resize with broken JSON", "v4.channel.k8s.io", true, func(r *rawSession) { r.send(websocket.BinaryMessage, []byte("\x04{\"Width\":")) }},
		{"resize with negative size", "v4.channel.k8s.io", true, func(r *rawSession) {
			r.send(websocket.BinaryMessage, []byte("\x04{\"Width\":-80,\"Height\":24}"))
		}},
		{"resize with huge size", "v4.channel.k8s.io", true, func(r *rawSession) {
			r.send(websocket.BinaryMessage, []byte("\x04{\"Width\":99999999999,\"Height\":24}"))
		}},
		{"resize without tty", "v4.channel.k8s.io", false, func(r *rawSession) {
			r.send(websocket.BinaryMessage, []byte("\x04{\"Width\":80,\"Height\":24}"))
		}},
		{"malformed v5 close", "v5.channel.k8s.io", false, func(r *rawSession) { r.send(websocket.BinaryMessage, []byte{255, 0, 1}) }},
		{"v5 close of stdout", "v5.channel.k8s.io", false, func(r *rawSession) { r.send(websocket.BinaryMessage, []byte{255, 1}) }},
		{"channel 255 on v4", "v4.channel.k8s.io", false, func(r *rawSession) { r.send(websocket.BinaryMessage, []byte{255, 0}) }},
		{"undecodable base64 frame", "v4.base64.channel.k8s.io", false, func(r *rawSession) { r.send(websocket.TextMessage, []byte("0!!!")) }},
	}
	for _, c := range ignored {
		t.Run(c.name, func(t *testing.T) {
			r := e.openCat(t, c.proto, c.tty)
			c.frame(r)
			if c.proto == "v4.base64.channel.k8s.io" {
				r.send(websocket.TextMessage, []byte("0"+b64("still-alive\n")))
				r.expectB64("still-alive")
			} else {
				r.echo("still-alive")
			}
			bystander.echo("bystander-" + c.name)
		})
	}

	t.Run("stdin after v5 close", func(t *testing.T) {
		r := e.openCat(t, "v5.channel.k8s.io", false)
		r.send(websocket.BinaryMessage, []byte("\x00before-close\n"))
		r.send(websocket.BinaryMessage, []byte{255, 0})
		r.send(websocket.BinaryMessage, []byte("\x00after-close\n"))
		// cat sees EOF and exits 0; only the bytes before the close arrive.
		var out strings.Builder
		r.ws.SetReadDeadline(time.Now().Add(15 * time.Second))
		for {
			_, msg, err := r.ws.ReadMessage()
			if err != nil {
				t.Fatalf("ended without status: %v; output %q", err, out.String())
			}
			if msg[0] == 1 {
				out.Write(msg[1:])
			}
			if msg[0] == 3 {
				if !strings.Contains(string(msg), `"status":"Success"`) {
					t.Fatalf("status %s", msg[1:])
				}
				break
			}
		}
		if out.String() != "before-close\n" {
			t.Fatalf("output %q, want only the bytes before the close", out.String())
		}
		bystander.echo("bystander-after-stdin-close")
	})

	closing := []struct {
		name  string
		proto string
		frame func(r *rawSession)
		code  int
	}{
		{"text frame on v4", "v4.channel.k8s.io", func(r *rawSession) { r.send(websocket.TextMessage, []byte("0hello")) }, websocket.CloseUnsupportedData},
		{"binary frame on base64", "v4.base64.channel.k8s.io", func(r *rawSession) { r.send(websocket.BinaryMessage, []byte{0, 'x'}) }, websocket.CloseUnsupportedData},
		{"oversized message", "v4.channel.k8s.io", func(r *rawSession) {
			r.send(websocket.BinaryMessage, append([]byte{0}, make([]byte, 9000)...))
		}, websocket.CloseMessageTooBig},
	}
	for _, c := range closing {
		t.Run(c.name, func(t *testing.T) {
			r := e.openCat(t, c.proto, false)
			c.frame(r)
			if code, _ := r.closedWith(); code != c.code {
				t.Fatalf("close code %d, want %d", code, c.code)
			}
			bystander.echo("bystander-" + c.name)
		})
	}
}

func (r *rawSession) expectB64(want string) {
	r.t.Helper()
	r.ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	defer r.ws.SetReadDeadline(time.Time{})
	var got strings.Builder
	for !strings.Contains(got.String(), want) {
		mt, msg, err := r.ws.ReadMessage()
		if err != nil {
			r.t.Fatalf("session broke: %v", err)
		}
		if mt != websocket.TextMessage {
			r.t.Fatalf("base64 protocol got message type %d", mt)
		}
		if msg[0] == '1' {
			got.WriteString(unb64(r.t, string(msg[1:])))
		}
	}
}

// TestLimits: each limit ends or refuses a session with a reason the user
// and the log can read.
func TestLimits(t *testing.T) {
	e := startEnv(t, envOptions{extraArgs: []string{"--max-sessions", "2", "--idle-timeout", "2s", "--max-session-lifetime", "4s"}})
	t.Run("idle timeout", func(t *testing.T) {
		r := e.openCat(t, "v4.channel.k8s.io", true)
		code, status := r.closedWith()
		if code != websocket.ClosePolicyViolation || !strings.Contains(status, "no input or output") {
			t.Fatalf("close %d, status %q", code, status)
		}
		e.WaitLog(10*time.Second, "session closed", func(m map[string]any) bool { return m["reason"] == "idle_timeout" })
	})
	t.Run("lifetime", func(t *testing.T) {
		r := e.openCat(t, "v4.channel.k8s.io", true)
		// Keep it busy so idleness is not what ends it.
		stop := make(chan struct{})
		defer close(stop)
		// Writes after the close fail and change nothing.
		go wait.Until(func() { _ = r.ws.WriteMessage(websocket.BinaryMessage, []byte("\x00.")) }, 200*time.Millisecond, stop)
		code, status := r.closedWith()
		if code != websocket.ClosePolicyViolation || !strings.Contains(status, "maximum lifetime") {
			t.Fatalf("close %d, status %q", code, status)
		}
	})
	t.Run("max sessions", func(t *testing.T) {
		waitFor(t, 10*time.Second, "earlier sessions ended", func() bool { return len(e.backend.PIDs()) == 0 })
		a := e.openCat(t, "v4.channel.k8s.io", false)
		b := e.openCat(t, "v4.channel.k8s.io", false)
		c := e.claims("cat")
		c.Stdin = true
		status, _, ws := e.tryUpgrade(t, upgradeRequest{path: "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?command=cat",
			header: bearer(e.mint(c)), protocols: []string{"v4.channel.k8s.io"}})
		if ws != nil {
			ws.Close()
		}
		if status != 503 {
			t.Fatalf("third session: status %d, want 503", status)
		}
		a.echo("a-still-works")
		b.echo("b-still-works")
	})
}

// TestSlowlorisHeaders: 1,000 connections that never finish their request
// headers are cut at the read-header timeout and do not stop a real session.
func TestSlowlorisHeaders(t *testing.T) {
	raiseFileLimit(t, 8192)
	e := startEnv(t, envOptions{extraArgs: []string{"--read-header-timeout", "2s"}})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 1000 {
		c, err := net.Dial("tcp", e.Addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		fmt.Fprintf(c, "GET /api/v1/namespaces/%s/pods/%s/exec HTTP/1.1\r\nHost: x\r\nUpgrade: web", testNamespace, testPod)
		conns = append(conns, c)
	}
	r := e.openCat(t, "v5.channel.k8s.io", false)
	r.echo("works-under-slowloris")
	// Every stalled connection is closed by the server.
	deadline := time.Now().Add(30 * time.Second)
	buf := make([]byte, 512)
	for i, c := range conns {
		c.SetReadDeadline(deadline)
		for {
			_, err := c.Read(buf)
			if err == nil {
				continue // a 408 response, then the close
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection %d still open after the read-header timeout", i)
			}
			break
		}
	}
	r.echo("works-after-slowloris")
}

func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	lim.Cur = min(n, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 2500 {
		t.Fatalf("cannot raise the open-file limit to %d (hard limit %d): %v", n, lim.Max, err)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func unb64(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("server sent invalid base64 %q: %v", s, err)
	}
	return string(b)
}
