package proxy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/recording"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testlog"
)

// spoolDiskFull makes the open recording at path fail its next write the
// way a full spool does: the descriptor the recorder holds is replaced
// (dup3, in this process) by one on /dev/full, whose writes fail with
// ENOSPC. The recorder's own code and file are untouched; a symlink
// planted beforehand would not do, since it opens with O_CREATE|O_EXCL.
func spoolDiskFull(t *testing.T, path string) {
	t.Helper()
	want, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || target != want {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Dup3(int(full.Fd()), fd, syscall.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no open descriptor on %s", want)
}

// waitFileContains polls path (the recorder writes it from the session's
// goroutines, with no event to wait on) until it holds s.
func waitFileContains(t *testing.T, path, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if bytes.Contains(data, []byte(s)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not hold %q after 20s; it holds %q", path, s, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A recording write that really fails mid-session (ENOSPC from the
// kernel): required mode ends the session with the terminal notice, a
// Failure status, close 1011, the process gone and the audit lines;
// best-effort logs and counts the failure once and the session runs to
// its normal end with all its output.
func TestRecordingWriteFailsMidSession(t *testing.T) {
	// The process prints a line, waits for one, then prints plenty: the
	// recording breaks between the two, with the session idle. In required
	// mode it would then sleep: only the failure can end it early.
	for mode, script := range map[recording.Mode]string{
		recording.Required:   "echo before; read x; seq 1 3000; sleep 60; echo after-$x",
		recording.BestEffort: "echo before; read x; seq 1 3000; echo after-$x",
	} {
		t.Run(string(mode), func(t *testing.T) {
			rec, dir := newRecorder(t, mode, 0)
			reader := sdkmetric.NewManualReader()
			h := newHarness(t, func(c *Config) {
				c.Recorder = rec
				c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			})
			ws, resp, err := h.dialTTY("sh", "-c", script)
			if err != nil {
				t.Fatalf("dial: %v (%v)", err, resp)
			}
			path := filepath.Join(dir, "rec-sid.cast")
			// The header and the first output are on disk before the
			// spool fills.
			waitFileContains(t, path, "before")
			spoolDiskFull(t, path)
			if err := ws.WriteMessage(websocket.BinaryMessage, []byte("\x00go\n")); err != nil {
				t.Fatal(err)
			}
			within := 60 * time.Second
			if mode == recording.Required {
				within = 30 * time.Second // it sleeps 60 s unless ended
			}
			e := readToEnd(ws, within)
			if e.code == websocket.CloseAbnormalClosure {
				t.Fatalf("the session did not end within %v; stdout tail %q", within, e.stdout[max(0, len(e.stdout)-200):])
			}
			waitNoSessions(t, h.srv)
			if err := h.waitProcesses(10*time.Second, 0); err != nil {
				t.Error(err)
			}

			var st struct{ Status, Reason, Message string }
			if err := json.Unmarshal([]byte(e.status), &st); err != nil {
				t.Fatalf("status %q: %v", e.status, err)
			}
			closed := h.log.wait(t, 10*time.Second, "session closed")
			if err := testlog.CheckAuditLine(closed, "close", "error"); err != nil {
				t.Error(err)
			}
			num := func(m map[string]any, k string) int { f, _ := m[k].(float64); return int(f) }
			var failedMsg string
			if mode == recording.Required {
				failedMsg = "recording failed; ending the session"
				notice := "\r\n[k8s-ws-proxy] session closed: the session recording failed\r\n"
				// A required recording takes output before the client
				// does: nothing past the failed write (the echo of "go")
				// reaches the terminal, and the notice is the last output.
				if want := "before\r\n" + notice; string(e.stdout) != want {
					t.Errorf("terminal got %q, want exactly %q", e.stdout[max(0, len(e.stdout)-200):], want)
				}
				if bytes.Contains(e.stdout, []byte("after-go")) {
					t.Error("the session ran to its end although its recording failed")
				}
				if st.Status != "Failure" || st.Reason != "ServiceUnavailable" || st.Message != "session closed: the session recording failed" {
					t.Errorf("status %s", e.status)
				}
				if e.code != websocket.CloseInternalServerErr {
					t.Errorf("close %d, want 1011", e.code)
				}
				if closed["reason"] != "recording_failed" || num(closed, "close_code") != 1011 || num(closed, "exit_code") != -1 {
					t.Errorf("closed line %v", closed)
				}
			} else {
				failedMsg = "recording stopped; the session goes on"
				if !bytes.Contains(e.stdout, []byte("\r\n2999\r\n3000\r\nafter-go\r\n")) {
					t.Errorf("output lost; tail %q", e.stdout[max(0, len(e.stdout)-200):])
				}
				if bytes.Contains(e.stdout, []byte("[k8s-ws-proxy]")) {
					t.Errorf("a notice in a best-effort session: %q", e.stdout)
				}
				if st.Status != "Success" {
					t.Errorf("status %s", e.status)
				}
				if e.code != websocket.CloseNormalClosure {
					t.Errorf("close %d, want 1000", e.code)
				}
				if closed["reason"] != "exited" || num(closed, "close_code") != 1000 || num(closed, "exit_code") != 0 {
					t.Errorf("closed line %v", closed)
				}
			}

			// One recording_failed line (the first failed write; later
			// output is not recorded), schema-checked.
			fails, _ := h.log.records(failedMsg)
			if len(fails) != 1 {
				t.Fatalf("%d %q lines, want 1", len(fails), failedMsg)
			}
			failed := fails[0]
			if err := testlog.CheckAuditLine(failed, "recording_failed"); err != nil {
				t.Error(err)
			}
			if failed["stage"] != "write" || failed["reason"] != "write_failed" || failed["mode"] != string(mode) ||
				failed["sid"] != "rec-sid" || !strings.Contains(failed["error"].(string), "no space left on device") {
				t.Errorf("recording_failed %v", failed)
			}
			if others, _ := h.log.records("recording failed"); len(others) != 0 {
				t.Errorf("stage open/close lines as well: %v", others)
			}
			m := metricsOf(t, reader)
			key := "k8s_ws_proxy.recording.failures{mode=" + string(mode) + ",reason=write_failed}"
			if m[key] != 1 {
				t.Errorf("%s = %d; metrics %v", key, m[key], m)
			}

			// What reached the spool before it filled is kept, valid, and
			// its size is the one the audit lines report.
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if closed["recording"] != path || closed["recording_failure"] != "write_failed" ||
				num(closed, "recording_bytes") != len(data) || num(failed, "bytes") != len(data) {
				t.Errorf("closed line %v, recording_failed bytes %v; file %d bytes", closed, failed["bytes"], len(data))
			}
			lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
			for _, l := range lines {
				if !json.Valid(l) {
					t.Errorf("invalid line %q", l)
				}
			}
			if len(lines) < 2 || !bytes.Contains(data, []byte(`"o","before\r\n"]`)) || bytes.Contains(data, []byte("after-go")) {
				t.Errorf("recording %q", data)
			}
		})
	}
}

// The spool fills after the last output: the end marker cannot be
// written when the session closes. The session has ended normally; the
// failure is logged (stage close), counted and named in the closed line.
func TestRecordingCloseFails(t *testing.T) {
	rec, dir := newRecorder(t, recording.Required, 0)
	reader := sdkmetric.NewManualReader()
	h := newHarness(t, func(c *Config) {
		c.Recorder = rec
		c.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	})
	// No tty: stdin is not echoed, so nothing is written between the
	// break and the end marker (input is not recorded by default).
	ws := h.dialClaims("v5.channel.k8s.io", func(c *hmac.Claims) { c.SID = "close-sid" }, "sh", "-c", "echo before; read x; exit 0")
	path := filepath.Join(dir, "close-sid.cast")
	waitFileContains(t, path, "before")
	spoolDiskFull(t, path)
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("\x00go\n")); err != nil {
		t.Fatal(err)
	}
	e := readToEnd(ws, 30*time.Second)
	if e.code != websocket.CloseNormalClosure || string(e.stdout) != "before\n" || !strings.Contains(e.status, `"status":"Success"`) {
		t.Errorf("session: close %d, stdout %q, status %s", e.code, e.stdout, e.status)
	}
	waitNoSessions(t, h.srv)
	failed := h.log.wait(t, 10*time.Second, "recording failed")
	if err := testlog.CheckAuditLine(failed, "recording_failed", "reason"); err != nil {
		t.Error(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	num := func(m map[string]any, k string) int { f, _ := m[k].(float64); return int(f) }
	if failed["stage"] != "close" || failed["mode"] != "required" || failed["sid"] != "close-sid" ||
		num(failed, "bytes") != len(data) || !strings.Contains(failed["error"].(string), "no space left on device") {
		t.Errorf("recording_failed %v; file %d bytes", failed, len(data))
	}
	closed := h.log.wait(t, 10*time.Second, "session closed")
	if err := testlog.CheckAuditLine(closed, "close", "error"); err != nil {
		t.Error(err)
	}
	if closed["reason"] != "exited" || num(closed, "exit_code") != 0 || num(closed, "close_code") != 1000 ||
		closed["recording_failure"] != "close_failed" || num(closed, "recording_bytes") != len(data) {
		t.Errorf("closed line %v; file %d bytes", closed, len(data))
	}
	if bytes.Contains(data, []byte(`"event\":\"end`)) || !bytes.Contains(data, []byte(`"o","before\n"]`)) {
		t.Errorf("recording %q", data)
	}
	m := metricsOf(t, reader)
	if key := "k8s_ws_proxy.recording.failures{mode=required,reason=close_failed}"; m[key] != 1 {
		t.Errorf("%s = %d; metrics %v", key, m[key], m)
	}
}
