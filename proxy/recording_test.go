package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/recording"
)

func newRecorder(t *testing.T, mode recording.Mode, maxBytes int64) (*recording.Recorder, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	r, err := recording.New(recording.Config{Mode: mode, Dir: dir, MaxBytes: maxBytes})
	if err != nil {
		t.Fatal(err)
	}
	return r, dir
}

// dialTTY opens a tty session of command with the v5 protocol.
func (h *harness) dialTTY(command ...string) (*websocket.Conn, *http.Response, error) {
	h.t.Helper()
	now := time.Now()
	tok, err := h.signer.Sign(hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "alice", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
		SID:              "rec-sid", Namespace: "ns", Pod: "pod", Container: "c", Command: command, TTY: true, Stdin: true,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	d := websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io"}}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(h.url, "http")+"/api/v1/namespaces/ns/pods/pod/exec",
		http.Header{"Authorization": {"Bearer " + tok}})
	if err == nil {
		h.t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

// readSession collects stdout and the channel 3 status until the close.
func readSession(t *testing.T, ws *websocket.Conn) (stdout []byte, status string, closeErr error) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(90 * time.Second))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return stdout, status, err
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case chanStdout:
			stdout = append(stdout, msg[1:]...)
		case chanError:
			status = string(msg[1:])
		}
	}
}

func castFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.cast"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// ensureAsciinema returns Debian's asciinema CLI, installing the package
// with apt-get when it is missing (CI runs as root).
func ensureAsciinema(t *testing.T) string {
	t.Helper()
	if p, err := osexec.LookPath("asciinema"); err == nil {
		return p
	}
	install := func() error {
		cmd := osexec.Command("apt-get", "install", "-y", "-qq", "asciinema")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("apt-get install asciinema: %v\n%s", err, out)
		}
		return err
	}
	if install() != nil {
		if out, err := osexec.Command("apt-get", "update", "-qq").CombinedOutput(); err != nil {
			t.Fatalf("apt-get update: %v\n%s", err, out)
		}
		if err := install(); err != nil {
			t.Fatal("asciinema is not installed and apt-get could not install it")
		}
	}
	p, err := osexec.LookPath("asciinema")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// asciinemaCat runs `asciinema cat file`. asciinema opens /dev/tty to put
// it in raw mode, so it runs with a pty as its controlling terminal and
// stdin, and its stdout is a pipe: what it prints arrives unchanged.
func asciinemaCat(t *testing.T, bin, file string) []byte {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close()
	go func() { _, _ = io.Copy(io.Discard, ptmx) }()
	var out, errOut bytes.Buffer
	cmd := osexec.Command(bin, "cat", file)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, &out, &errOut
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "PYTHONIOENCODING=utf-8", "HOME="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Run(); err != nil {
		t.Fatalf("asciinema cat: %v\n%s", err, errOut.String())
	}
	return out.Bytes()
}

// An independent player agrees with the client: asciinema cat of the
// recording of a real tty session (seq 1 20000, a resize, exit 3) prints
// exactly the bytes the client received on stdout.
func TestRecordingAsciinemaCat(t *testing.T) {
	t.Parallel()
	bin := ensureAsciinema(t)
	rec, dir := newRecorder(t, recording.Required, 0)
	h := newHarness(t, func(c *Config) { c.Recorder = rec; c.Version = "v0.0.0-test" })
	ws, resp, err := h.dialTTY("sh", "-c", "seq 1 20000; exit 3")
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{chanResize}, `{"Width":132,"Height":43}`...)); err != nil {
		t.Fatal(err)
	}
	stdout, status, closeErr := readSession(t, ws)
	if !websocket.IsCloseError(closeErr, websocket.CloseNormalClosure) {
		t.Fatalf("session ended with %v", closeErr)
	}
	if !strings.Contains(status, `"message":"3"`) && !strings.Contains(status, "exit code 3") {
		t.Fatalf("status %s", status)
	}
	if !bytes.HasSuffix(stdout, []byte("19999\r\n20000\r\n")) {
		t.Fatalf("stdout ends %q", stdout[max(0, len(stdout)-40):])
	}
	// The recording is closed once the session's closed line is logged:
	// wait for the registry to empty.
	waitNoSessions(t, h.srv)
	files := castFiles(t, dir)
	if len(files) != 1 || filepath.Base(files[0]) != "rec-sid.cast" {
		t.Fatalf("spool holds %v", files)
	}
	played := asciinemaCat(t, bin, files[0])
	if !bytes.Equal(played, stdout) {
		t.Fatalf("asciinema cat printed %d bytes, the client received %d; first difference at %d",
			len(played), len(stdout), firstDiff(played, stdout))
	}

	data, _ := os.ReadFile(files[0])
	first, rest, _ := bytes.Cut(data, []byte("\n"))
	var hdr map[string]any
	if err := json.Unmarshal(first, &hdr); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"version": 2.0, "width": 132.0, "height": 43.0, "sid": "rec-sid", "sub": "alice",
		"namespace": "ns", "pod": "pod", "container": "c", "node": "node", "transport": "v5.channel.k8s.io",
		"proxy_version": "v0.0.0-test", "command": "sh -c seq 1 20000; exit 3"} {
		if hdr[k] != want {
			t.Errorf("header %s = %v, want %v", k, hdr[k], want)
		}
	}
	t.Logf("header: %s", first)
	if !bytes.Contains(rest, []byte(`,"r","132x43"]`)) {
		t.Error("no resize event")
	}
	lines := bytes.Split(bytes.TrimSpace(rest), []byte("\n"))
	if last := string(lines[len(lines)-1]); !strings.Contains(last, `"m","{\"event\":\"end\",\"exit_code\":3,\"reason\":\"exited\"}"]`) {
		t.Errorf("last event %s", last)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func waitNoSessions(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.ActiveSessions() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("sessions still registered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.wg.Wait()
}

// Required mode fails closed before the upgrade; best-effort goes on.
func TestRecordingUnavailable(t *testing.T) {
	t.Parallel()
	for _, mode := range []recording.Mode{recording.Required, recording.BestEffort} {
		t.Run(string(mode), func(t *testing.T) {
			rec, dir := newRecorder(t, mode, 0)
			spoolBecomesFile(t, dir)
			h := newHarness(t, func(c *Config) { c.Recorder = rec })
			ws, resp, err := h.dialTTY("sh", "-c", "echo ran")
			if mode == recording.BestEffort {
				if err != nil {
					t.Fatalf("best-effort refused: %v", err)
				}
				out, _, _ := readSession(t, ws)
				if !bytes.Contains(out, []byte("ran")) {
					t.Fatalf("output %q", out)
				}
				return
			}
			if err == nil {
				t.Fatal("required mode upgraded without a recording")
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("recording")) {
				t.Fatalf("got %d %s", resp.StatusCode, body)
			}
		})
	}
}

// The size limit ends a required session with a notice and a failure
// status; best-effort keeps the session and stops recording.
func TestRecordingMaxBytes(t *testing.T) {
	t.Parallel()
	for _, mode := range []recording.Mode{recording.Required, recording.BestEffort} {
		t.Run(string(mode), func(t *testing.T) {
			rec, dir := newRecorder(t, mode, 4096)
			h := newHarness(t, func(c *Config) { c.Recorder = rec })
			ws, resp, err := h.dialTTY("sh", "-c", "seq 1 5000; sleep 30")
			if err != nil {
				t.Fatalf("dial: %v (%v)", err, resp)
			}
			start := time.Now()
			if mode == recording.BestEffort {
				// The whole output arrives although recording stopped.
				ws.SetReadDeadline(time.Now().Add(60 * time.Second))
				var out []byte
				for !bytes.Contains(out, []byte("\r\n5000\r\n")) {
					_, msg, err := ws.ReadMessage()
					if err != nil {
						t.Fatalf("best-effort session ended: %v; got %d bytes", err, len(out))
					}
					out = append(out, msg[1:]...)
				}
				ws.Close()
			} else {
				out, status, closeErr := readSession(t, ws)
				if time.Since(start) > 25*time.Second {
					t.Fatal("required session was not ended at the limit")
				}
				if !bytes.Contains(out, []byte("[k8s-ws-proxy] session closed: the session recording reached its size limit")) {
					t.Errorf("no notice in the terminal; tail %q", out[max(0, len(out)-200):])
				}
				if !strings.Contains(status, `"status":"Failure"`) {
					t.Errorf("status %s", status)
				}
				if !websocket.IsCloseError(closeErr, websocket.CloseInternalServerErr) {
					t.Errorf("close %v", closeErr)
				}
			}
			waitNoSessions(t, h.srv)
			files := castFiles(t, dir)
			if len(files) != 1 {
				t.Fatalf("spool %v", files)
			}
			data, _ := os.ReadFile(files[0])
			if !bytes.Contains(data, []byte(`{\"event\":\"truncated\",\"reason\":\"max_bytes\"}`)) {
				t.Fatal("no truncation marker")
			}
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				if !json.Valid(sc.Bytes()) {
					t.Fatalf("invalid line %q", sc.Bytes())
				}
			}
		})
	}
}

// An empty --exit-notice is the flag's default, not a second one.
func TestParseExitNoticeDefault(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]ExitNotice{"": ExitNoticeDefault, " ": ExitNoticeDefault, "AUTO": ExitNoticeAuto, "never": ExitNoticeNever, "always": ExitNoticeAlways} {
		if got, err := ParseExitNotice(in); err != nil || got != want {
			t.Errorf("ParseExitNotice(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if ExitNoticeDefault != ExitNoticeAuto {
		t.Errorf("ExitNoticeDefault %q, want auto (docs/configuration.md)", ExitNoticeDefault)
	}
	if _, err := ParseExitNotice("sometimes"); err == nil {
		t.Error("ParseExitNotice(\"sometimes\") accepted")
	}
}

// --exit-notice=auto tells a guacd user (v4, tty) the exit code on the
// terminal; a v5 client's stdout stays exact; never writes nothing.
func TestExitNotice(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		notice ExitNotice
		proto  string
		want   bool
	}{
		{ExitNoticeAuto, "v4.channel.k8s.io", true},
		{ExitNoticeAuto, "v5.channel.k8s.io", false},
		{ExitNoticeNever, "v4.channel.k8s.io", false},
		{ExitNoticeAlways, "v5.channel.k8s.io", true},
	} {
		t.Run(string(tc.notice)+"-"+tc.proto, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.ExitNotice = tc.notice })
			now := time.Now()
			tok, _ := h.signer.Sign(hmac.Claims{
				RegisteredClaims: jwt.RegisteredClaims{IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
				Namespace:        "ns", Pod: "pod", Container: "c", Command: []string{"sh", "-c", "printf done; exit 7"}, TTY: true, Stdin: true,
			})
			d := websocket.Dialer{Subprotocols: []string{tc.proto}}
			ws, resp, err := d.Dial("ws"+strings.TrimPrefix(h.url, "http")+"/api/v1/namespaces/ns/pods/pod/exec",
				http.Header{"Authorization": {"Bearer " + tok}})
			if err != nil {
				t.Fatalf("dial: %v (%v)", err, resp)
			}
			defer ws.Close()
			out, _, _ := readSession(t, ws)
			notice := "\r\n[k8s-ws-proxy] process exited with code 7\r\n"
			if got := strings.HasSuffix(string(out), notice); got != tc.want {
				t.Fatalf("stdout %q; notice wanted: %v", out, tc.want)
			}
			if !tc.want && string(out) != "done" {
				t.Fatalf("stdout %q, want exactly %q", out, "done")
			}
		})
	}
}
