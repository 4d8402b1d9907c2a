package proxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Item 4: every way a session ends logs what the client really got. The
// opened line names the session; the closed line's counters, exit code,
// close code, duration and reason are checked for each ending.
func TestClosedLineForEachEnding(t *testing.T) {
	echo := func(t *testing.T, _ *harness, ws *websocket.Conn) {
		t.Helper()
		ws.WriteMessage(websocket.BinaryMessage, []byte("\x00hi\n"))
		ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "\x01hi\n" {
			t.Fatalf("echo: %q %v", msg, err)
		}
	}
	type want struct {
		reason         string
		exit, close    int
		in, out, outGE int // outGE: bytes_out at least (a notice was added)
	}
	cases := []struct {
		name    string
		cfg     func(*Config)
		command []string
		act     func(t *testing.T, h *harness, ws *websocket.Conn)
		want    want
	}{
		// head, not cat closed by v5's half-close: a v4 WebSocket upstream
		// cannot half-close.
		{"exit0", nil, []string{"head", "-c", "3"}, echo, want{reason: "exited", exit: 0, close: 1000, in: 3, out: 3}},
		{"exitN", nil, []string{"sh", "-c", "exit 3"}, nil, want{reason: "exited", exit: 3, close: 1000}},
		{"signal", nil, []string{"sh", "-c", "kill -9 $$"}, nil, want{reason: "exited", exit: 137, close: 1000}},
		{"client_close", nil, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			echo(t, h, ws)
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(5*time.Second))
		}, want{reason: "client_closed_4000", exit: -1, close: 4000, in: 3, out: 3}},
		{"client_vanish", nil, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			echo(t, h, ws)
			ws.NetConn().Close()
		}, want{reason: "client_gone", exit: -1, close: 1006, in: 3, out: 3}},
		{"idle", func(c *Config) { c.IdleTimeout = 500 * time.Millisecond }, []string{"cat"}, echo,
			want{reason: "idle_timeout", exit: -1, close: 1008, in: 3, outGE: 4}},
		{"lifetime", func(c *Config) { c.MaxLifetime = time.Second }, []string{"cat"}, echo,
			want{reason: "max_lifetime", exit: -1, close: 1008, in: 3, outGE: 4}},
		{"max_message", func(c *Config) { c.MaxMessageSize = 1024 }, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			echo(t, h, ws)
			ws.WriteMessage(websocket.BinaryMessage, make([]byte, 2048))
		}, want{reason: "message_too_big", exit: -1, close: 1009, in: 3, out: 3}},
		{"drain", nil, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			echo(t, h, ws)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			go h.srv.Drain(ctx)
		}, want{reason: "shutdown", exit: -1, close: 1001, in: 3, outGE: 4}},
		{"backend_cut", nil, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			echo(t, h, ws)
			h.cut.Cut()
		}, want{reason: "exec_failed", exit: -1, close: 1011, in: 3, out: 3}},
	}
	for _, tr := range upstreams {
		for _, c := range cases {
			t.Run(string(tr)+"/"+c.name, func(t *testing.T) {
				h := newHarnessCut(t, tr, c.cfg)
				ws := h.dial(ProtocolV5, c.command...)
				if c.act != nil {
					c.act(t, h, ws)
				}
				e := readToEnd(ws, 30*time.Second)
				if c.name != "client_vanish" && e.code != c.want.close {
					t.Errorf("the client got close %d, want %d", e.code, c.want.close)
				}
				opened := h.log.wait(t, 10*time.Second, "session opened")
				closed := h.log.wait(t, 10*time.Second, "session closed")
				if opened["sid"] == "" || opened["sid"] != closed["sid"] || opened["protocol"] != ProtocolV5 || opened["event"] != "open" {
					t.Errorf("opened %v, closed sid %v", opened, closed["sid"])
				}
				num := func(k string) int { f, _ := closed[k].(float64); return int(f) }
				if closed["reason"] != c.want.reason || num("exit_code") != c.want.exit || num("close_code") != c.want.close {
					t.Errorf("reason %v exit_code %v close_code %v, want %s %d %d",
						closed["reason"], closed["exit_code"], closed["close_code"], c.want.reason, c.want.exit, c.want.close)
				}
				if num("bytes_in") != c.want.in {
					t.Errorf("bytes_in %v, want %d", closed["bytes_in"], c.want.in)
				}
				if c.want.outGE > 0 {
					if num("bytes_out") < c.want.in+c.want.outGE {
						t.Errorf("bytes_out %v, want the echo and the notice", closed["bytes_out"])
					}
				} else if num("bytes_out") != c.want.out {
					t.Errorf("bytes_out %v, want %d", closed["bytes_out"], c.want.out)
				}
				if d, err := time.ParseDuration(closed["duration"].(string)); err != nil || d <= 0 {
					t.Errorf("duration %v", closed["duration"])
				}
				if errText, _ := closed["error"].(string); strings.Contains(errText, "context canceled") {
					t.Errorf("error %q for an ending the proxy chose", errText)
				}
			})
		}
	}
}
