package testenv

import (
	"bytes"
	"fmt"
	"time"

	"github.com/gorilla/websocket"
)

// ReadChannel reads channel-protocol frames (binary, first byte the
// channel) until the payloads of channel, concatenated, contain want, and
// returns them. Frames of other channels are skipped.
func ReadChannel(ws *websocket.Conn, channel byte, want string, within time.Duration) (string, error) {
	var got []byte
	ws.SetReadDeadline(time.Now().Add(within))
	defer ws.SetReadDeadline(time.Time{})
	for !bytes.Contains(got, []byte(want)) {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return string(got), fmt.Errorf("reading for %q: %w; got %q", want, err, got)
		}
		if len(msg) > 0 && msg[0] == channel {
			got = append(got, msg[1:]...)
		}
	}
	return string(got), nil
}
