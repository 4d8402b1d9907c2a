package proxy

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/recording"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testlog"
)

// Item 4: every way a session ends logs what the client really got. The
// opened line names the session; the closed line's counters, exit code,
// close code, duration and reason are checked for each ending.
func TestClosedLineForEachEnding(t *testing.T) {
	hi := func(t *testing.T, _ *harness, ws *websocket.Conn) {
		t.Helper()
		echo(t, ws, "hi\n")
	}
	type want struct {
		reason         string
		exit, close    int
		in, out, outGE int  // outGE: bytes_out at least (a notice was added)
		err            bool // the closed line carries the exec's error
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
		{"exit0", nil, []string{"head", "-c", "3"}, hi, want{reason: "exited", exit: 0, close: 1000, in: 3, out: 3}},
		{"exitN", nil, []string{"sh", "-c", "exit 3"}, nil, want{reason: "exited", exit: 3, close: 1000}},
		{"signal", nil, []string{"sh", "-c", "kill -9 $$"}, nil, want{reason: "exited", exit: 137, close: 1000}},
		{"client_close", nil, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			hi(t, h, ws)
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(5*time.Second))
		}, want{reason: "client_closed_4000", exit: -1, close: 4000, in: 3, out: 3}},
		{"client_vanish", nil, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			hi(t, h, ws)
			ws.NetConn().Close()
		}, want{reason: "client_gone", exit: -1, close: 1006, in: 3, out: 3}},
		{"idle", func(c *Config) { c.IdleTimeout = 500 * time.Millisecond }, []string{"cat"}, hi,
			want{reason: "idle_timeout", exit: -1, close: 1008, in: 3, outGE: 4}},
		{"lifetime", func(c *Config) { c.MaxLifetime = time.Second }, []string{"cat"}, hi,
			want{reason: "max_lifetime", exit: -1, close: 1008, in: 3, outGE: 4}},
		{"max_message", func(c *Config) { c.MaxMessageSize = 1024 }, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			hi(t, h, ws)
			ws.WriteMessage(websocket.BinaryMessage, make([]byte, 2048))
		}, want{reason: "message_too_big", exit: -1, close: 1009, in: 3, out: 3}},
		{"drain", nil, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			hi(t, h, ws)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			go h.srv.Drain(ctx)
		}, want{reason: "shutdown", exit: -1, close: 1001, in: 3, outGE: 4}},
		{"backend_cut", nil, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			hi(t, h, ws)
			h.cut.Cut()
		}, want{reason: "exec_failed", exit: -1, close: 1011, in: 3, out: 3, err: true}},
		// A client that reads but never answers a ping.
		{"ping_timeout", func(c *Config) { c.PingInterval = 200 * time.Millisecond }, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			ws.SetPingHandler(func(string) error { return nil })
			hi(t, h, ws)
		}, want{reason: "ping_timeout", exit: -1, close: 1006, in: 3, out: 3}},
		// A continuation frame with no message to continue: gorilla
		// answers 1002 itself.
		{"protocol_error", nil, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			hi(t, h, ws)
			ws.NetConn().Write(rawFrame(0, true, []byte("x")))
		}, want{reason: "protocol_error", exit: -1, close: 1002, in: 3, out: 3}},
		// v5 is binary: a text frame is refused with 1003.
		{"wrong_frame_type", nil, []string{"cat"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			hi(t, h, ws)
			ws.WriteMessage(websocket.TextMessage, []byte("\x00hi\n"))
		}, want{reason: "protocol_error", exit: -1, close: 1003, in: 3, out: 3}},
		// A client that stops reading while the process writes: the write
		// deadline passes and the connection is dropped.
		{"client_write_failed", func(c *Config) { c.WriteTimeout = 300 * time.Millisecond }, []string{"yes"}, func(t *testing.T, h *harness, ws *websocket.Conn) {
			h.log.wait(t, 30*time.Second, "session closed")
		}, want{reason: "client_write_failed", exit: -1, close: 1006, outGE: 1}},
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
				if err := testlog.CheckAuditLine(opened, "open"); err != nil {
					t.Error(err)
				}
				absent := []string{"recording", "recording_bytes", "recording_failure"}
				if !c.want.err {
					absent = append(absent, "error")
				}
				if err := testlog.CheckAuditLine(closed, "close", absent...); err != nil {
					t.Error(err)
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

// The recording's audit lines against docs/audit.md: a required recording
// that reaches its size limit logs recording_failed (stage write) and a
// closed line with reason recording_limit, close 1011 and the recording's
// fields; a best-effort recording that cannot be opened logs
// recording_failed (stage open) and the session's closed line has no
// recording fields.
func TestRecordingAuditLines(t *testing.T) {
	t.Run("required limit", func(t *testing.T) {
		rec, _ := newRecorder(t, recording.Required, 4096)
		h := newHarness(t, func(c *Config) { c.Recorder = rec })
		ws, resp, err := h.dialTTY("sh", "-c", "seq 1 5000; sleep 30")
		if err != nil {
			t.Fatalf("dial: %v (%v)", err, resp)
		}
		e := readToEnd(ws, 30*time.Second)
		if e.code != websocket.CloseInternalServerErr {
			t.Errorf("close %d, want 1011", e.code)
		}
		failed := h.log.wait(t, 10*time.Second, "recording failed; ending the session")
		if err := testlog.CheckAuditLine(failed, "recording_failed"); err != nil {
			t.Error(err)
		}
		if failed["stage"] != "write" || failed["reason"] != "max_bytes" || failed["mode"] != "required" {
			t.Errorf("recording_failed %v", failed)
		}
		closed := h.log.wait(t, 10*time.Second, "session closed")
		if err := testlog.CheckAuditLine(closed, "close", "error"); err != nil {
			t.Error(err)
		}
		num := func(k string) int { f, _ := closed[k].(float64); return int(f) }
		// An event that would pass the limit is dropped whole, so a first
		// read larger than 4096 bytes leaves only the header and markers:
		// bound the file from above (limit plus the two markers), not below.
		// What the client got was recorded first: at most the recorded
		// output plus the notice.
		if closed["reason"] != "recording_limit" || num("close_code") != 1011 || num("exit_code") != -1 ||
			closed["recording_failure"] != "max_bytes" || num("recording_bytes") <= 0 || num("recording_bytes") > 4096+512 ||
			num("bytes_out") <= 0 || num("bytes_out") > num("recording_bytes")+200 {
			t.Errorf("closed line %v", closed)
		}
		if d, err := time.ParseDuration(closed["duration"].(string)); err != nil || d <= 0 {
			t.Errorf("duration %v", closed["duration"])
		}
	})
	t.Run("best-effort open fails", func(t *testing.T) {
		rec, dir := newRecorder(t, recording.BestEffort, 0)
		spoolBecomesFile(t, dir)
		h := newHarness(t, func(c *Config) { c.Recorder = rec })
		ws, resp, err := h.dialTTY("sh", "-c", "exit 4")
		if err != nil {
			t.Fatalf("dial: %v (%v)", err, resp)
		}
		if e := readToEnd(ws, 30*time.Second); e.code != websocket.CloseNormalClosure {
			t.Errorf("close %d", e.code)
		}
		failed := h.log.wait(t, 10*time.Second, "recording failed")
		if err := testlog.CheckAuditLine(failed, "recording_failed", "reason", "bytes"); err != nil {
			t.Error(err)
		}
		if failed["stage"] != "open" || failed["mode"] != "best-effort" {
			t.Errorf("recording_failed %v", failed)
		}
		closed := h.log.wait(t, 10*time.Second, "session closed")
		if err := testlog.CheckAuditLine(closed, "close", "error", "recording", "recording_bytes", "recording_failure"); err != nil {
			t.Error(err)
		}
		if closed["reason"] != "exited" || closed["exit_code"] != float64(4) || closed["close_code"] != float64(1000) {
			t.Errorf("closed line %v", closed)
		}
	})
}

// spoolBecomesFile puts a file where the spool directory was: opening a
// recording then fails (ENOTDIR), even for root.
func spoolBecomesFile(t *testing.T, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A writer that has sent output but not yet counted it still shows in the
// closed line: SPDY's executor returns on cancel without waiting for its
// copies, so the end waits for the write lock. The test holds the lock as
// that writer would, and counts its bytes before letting go.
func TestClosedLineWaitsForWriterInFlight(t *testing.T) {
	eachUpstream(t, nil, func(t *testing.T, h *harness) {
		ws := h.dial(ProtocolV5, "cat")
		echo(t, ws, "hi\n")
		h.srv.mu.Lock()
		var ss *session
		for s := range h.srv.sessions {
			ss = s
		}
		h.srv.mu.Unlock()
		ss.wmu.Lock()
		ws.NetConn().Close()
		err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true,
			func(context.Context) (bool, error) {
				if lines, _ := h.log.records("session closed"); len(lines) > 0 {
					return false, errors.New("the closed line was logged while a writer held the lock")
				}
				return goroutineIn("proxy.(*session).awaitWriters"), nil
			})
		ss.bytesOut.Add(7)
		ss.wmu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		closed := h.log.wait(t, 10*time.Second, "session closed")
		if got, _ := closed["bytes_out"].(float64); got != 3+7 {
			t.Errorf("bytes_out %v, want 10 (the echo and the write in flight)", closed["bytes_out"])
		}
	})
}

// goroutineIn says whether some goroutine's stack has the function in it.
func goroutineIn(fn string) bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn)
}
