package testenv

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// ReadChannel reads channel-protocol frames (binary, first byte the
// channel) until the payloads of channel, concatenated, contain want, and
// returns them; tb fails when want has not come within 30 seconds. Frames
// of other channels are skipped.
func ReadChannel(tb testing.TB, ws *websocket.Conn, channel byte, want string) string {
	tb.Helper()
	var got []byte
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer ws.SetReadDeadline(time.Time{})
	for !bytes.Contains(got, []byte(want)) {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			tb.Fatalf("reading for %q: %v; got %q", want, err, got)
		}
		if len(msg) > 0 && msg[0] == channel {
			got = append(got, msg[1:]...)
		}
	}
	return string(got)
}

// ReadToClose reads channel-protocol frames until the peer closes ws and
// returns channel 1's payloads, concatenated, and the last channel 3
// (status) message; the error says when the close code was not want or the
// read failed otherwise.
func ReadToClose(ws *websocket.Conn, want int, within time.Duration) (stdout []byte, status string, err error) {
	ws.SetReadDeadline(time.Now().Add(within))
	defer ws.SetReadDeadline(time.Time{})
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, want) {
				return stdout, status, fmt.Errorf("ended with %w, want close code %d", err, want)
			}
			return stdout, status, nil
		}
		switch {
		case len(msg) == 0:
		case msg[0] == 1:
			stdout = append(stdout, msg[1:]...)
		case msg[0] == 3:
			status = string(msg[1:])
		}
	}
}
