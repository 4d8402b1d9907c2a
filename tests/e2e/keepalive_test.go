package e2e

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testnet"
)

// TestIdleSessionSurvivesMiddlebox: with server pings every second, a
// session with no data for 5 s survives a middlebox that drops
// connections idle for 2 s, and still works afterwards.
func TestIdleSessionSurvivesMiddlebox(t *testing.T) {
	e := startEnv(t, envOptions{extraArgs: []string{"--ping-interval", "1s"}})
	// A middlebox that drops connections idle for 2 s, as cloud load
	// balancers do (60 s) and HAProxy (20 s), scaled down.
	mb := testnet.NewRelay(t, e.Addr, testnet.Options{Idle: 2 * time.Second})
	addr := mb.Addr()
	c := e.claims("cat")
	c.Stdin = true
	d := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}}
	ws, _, err := d.Dial("ws://"+addr+"/api/v1/namespaces/"+testNamespace+"/pods/"+testPod+"/exec?command=cat",
		bearer(e.mint(c)))
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	r := &rawSession{t: t, ws: ws}
	r.echo("before-idle")
	// Stay idle while reading (the reader answers pings) for 5 s.
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = ws.ReadMessage()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("idle read ended with %v, want our own timeout", err)
	}
	// gorilla's connection is unusable after a read timeout: prove the
	// session survived by checking the middlebox never dropped it and the
	// proxy never closed it.
	if n := mb.Dropped(); n != 0 {
		t.Fatalf("the middlebox dropped %d idle connections", n)
	}
	if lines := e.LogLines("session closed"); len(lines) != 0 {
		t.Fatalf("the session was closed during the idle period: %v", lines)
	}
}

// TestSilentClientIsClosed: a client that never answers pings (it never
// reads, so it never sees them) is closed after two ping periods.
func TestSilentClientIsClosed(t *testing.T) {
	e := startEnv(t, envOptions{extraArgs: []string{"--ping-interval", "500ms"}})
	c := e.claims("cat")
	c.Stdin = true
	conn, err := net.Dial("tcp", e.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest("GET", "http://"+e.Addr+"/api/v1/namespaces/"+testNamespace+"/pods/"+testPod+"/exec?command=cat", nil)
	req.Header.Set("Authorization", "Bearer "+e.mint(c))
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	closed := e.WaitLog(10*time.Second, "session closed", nil)
	if closed["reason"] != "ping_timeout" {
		t.Fatalf("close reason %v, want ping_timeout", closed["reason"])
	}
	// The server sent pings before giving up: the raw stream holds at
	// least one ping frame (opcode 0x9) after the 101 response.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw, _ := io.ReadAll(conn)
	head, body, ok := strings.Cut(string(raw), "\r\n\r\n")
	if !ok || !strings.HasPrefix(head, "HTTP/1.1 101") {
		t.Fatalf("no 101 response: %q", head)
	}
	if !strings.Contains(body, "\x89\x00") {
		t.Fatalf("no ping frame in %q", body)
	}
}

// TestClientPingsAreAnswered: a client's ping gets a pong with its data.
func TestClientPingsAreAnswered(t *testing.T) {
	e := startEnv(t, envOptions{})
	r := e.openCat(t, "v4.channel.k8s.io", false)
	pong := make(chan string, 1)
	r.ws.SetPongHandler(func(data string) error { pong <- data; return nil })
	if err := r.ws.WriteControl(websocket.PingMessage, []byte("are-you-there"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			if _, _, err := r.ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	select {
	case data := <-pong:
		if data != "are-you-there" {
			t.Fatalf("pong data %q", data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pong")
	}
}
