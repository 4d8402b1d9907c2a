package proxy

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// rawFrame is one client frame (masked with a zero key, so the payload
// reads as written), for what gorilla's writer never sends.
func rawFrame(opcode byte, fin bool, payload []byte) []byte {
	b0 := opcode
	if fin {
		b0 |= 0x80
	}
	var f []byte
	switch n := len(payload); {
	case n < 126:
		f = []byte{b0, 0x80 | byte(n)}
	default:
		f = []byte{b0, 0x80 | 126, 0, 0}
		binary.BigEndian.PutUint16(f[2:], uint16(n))
	}
	f = append(f, 0, 0, 0, 0) // masking key
	return append(f, payload...)
}

// Item 10: RFC 6455 allows control frames between the fragments of a
// message; a small message split in two with a ping in between is one
// message, and the ping is answered.
func TestFragmentedMessageWithPing(t *testing.T) {
	t.Parallel()
	eachUpstream(t, nil, func(t *testing.T, h *harness) {
		ws := h.dial(ProtocolV4, "cat")
		pong := make(chan string, 1)
		ws.SetPongHandler(func(s string) error { pong <- s; return nil })
		var raw []byte
		raw = append(raw, rawFrame(websocket.BinaryMessage, false, []byte("\x00hel"))...)
		raw = append(raw, rawFrame(websocket.PingMessage, true, []byte("between"))...)
		raw = append(raw, rawFrame(0, true, []byte("lo\n"))...)
		if _, err := ws.NetConn().Write(raw); err != nil {
			t.Fatal(err)
		}
		ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, msg, err := ws.ReadMessage()
		if err != nil || string(msg) != "\x01hello\n" {
			t.Fatalf("echo %q, %v; want the reassembled message echoed", msg, err)
		}
		select {
		case p := <-pong:
			if p != "between" {
				t.Fatalf("pong %q", p)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the ping between the fragments was not answered")
		}
	})
}

// Item 10: a close frame with a 1-byte payload is malformed (a code takes
// two): the answer is 1002, not 1005.
func TestOneByteCloseIsProtocolError(t *testing.T) {
	t.Parallel()
	eachUpstream(t, nil, func(t *testing.T, h *harness) {
		ws := h.dial(ProtocolV4, "cat")
		// The session is up end to end first: client-go's WebSocket
		// executor leaks its stream readers when its connection closes
		// in the instant between creating the streams and starting to
		// read (see the issue note), which is not what this tests.
		echo(t, ws, "up\n")
		if _, err := ws.NetConn().Write(rawFrame(websocket.CloseMessage, true, []byte{3})); err != nil {
			t.Fatal(err)
		}
		ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseProtocolError {
			t.Fatalf("read ended with %v, want close 1002", err)
		}
		closed := h.log.wait(t, 10*time.Second, "session closed")
		if closed["close_code"] != float64(websocket.CloseProtocolError) {
			t.Fatalf("close_code %v, want 1002", closed["close_code"])
		}
	})
}
