package e2e

import (
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// frameLog is a session's frames toward the client in arrival order, up to
// the close.
type frameLog struct {
	stdout    string // channels 1 and 2, in order
	status    string // channel 3
	beforeEnd string // stdout that arrived before the status frame
	closeErr  error
}

func readFrames(t *testing.T, ws *websocket.Conn) frameLog {
	t.Helper()
	var l frameLog
	var out strings.Builder
	seenStatus := false
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			l.closeErr = err
			l.stdout = out.String()
			if !seenStatus {
				l.beforeEnd = l.stdout
			}
			return l
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case 1, 2:
			if seenStatus {
				t.Errorf("output %q after the status frame", msg[1:])
			}
			out.Write(msg[1:])
		case 3:
			seenStatus = true
			l.status = string(msg[1:])
			l.beforeEnd = out.String()
		}
	}
}

// TestExitNoticeAuto: the binary's default --exit-notice=auto tells a
// guacd user (tty, v4, which ignores channel 3) the exit code as one line
// on the terminal after the output, before the status and the close; a v5
// client with a tty and a v4 client without one get their output byte for
// byte.
func TestExitNoticeAuto(t *testing.T) {
	e := startEnv(t, envOptions{})
	script := "printf done; exit 7"
	const notice = "\r\n[k8s-ws-proxy] process exited with code 7\r\n"
	check := func(t *testing.T, l frameLog, want string) {
		t.Helper()
		var ce *websocket.CloseError
		if !errors.As(l.closeErr, &ce) || ce.Code != websocket.CloseNormalClosure {
			t.Errorf("session ended with %v, want close 1000", l.closeErr)
		}
		if l.stdout != want {
			t.Errorf("terminal output %q, want exactly %q", l.stdout, want)
		}
		if l.beforeEnd != want {
			t.Errorf("output before the status frame %q, want %q", l.beforeEnd, want)
		}
		// v4 and v5 send a Status; v1 the error text.
		if !strings.Contains(l.status, `"reason":"ExitCode","message":"7"`) && !strings.HasSuffix(l.status, "exit code 7") {
			t.Errorf("status %q, want exit code 7", l.status)
		}
	}

	t.Run("guacd", func(t *testing.T) {
		c := e.claims("/bin/sh", "-c", script)
		c.TTY, c.Stdin = true, true
		path, err := testenv.GuacdPath(c.Namespace, e.mint(c), c.Container, "/bin/sh -c "+script)
		if err != nil {
			t.Fatal(err)
		}
		// guacd's handshake: v4 only, Host and Origin from the hostname
		// parameter alone, no other headers.
		d := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}, HandshakeTimeout: 30 * time.Second,
			NetDial: func(network, _ string) (net.Conn, error) { return net.Dial(network, e.Addr) }}
		ws, resp, err := d.Dial("ws://127.0.0.1"+path, map[string][]string{"Origin": {"http://127.0.0.1"}, "User-Agent": {""}})
		if err != nil {
			t.Fatalf("dial: %v (%v)", err, resp)
		}
		defer ws.Close()
		check(t, readFrames(t, ws), "done"+notice)
		closed := e.WaitLog(10*time.Second, "session closed", nil)
		if closed["exit_code"] != float64(7) || closed["reason"] != "exited" {
			t.Errorf("closed line exit_code %v reason %v", closed["exit_code"], closed["reason"])
		}
	})
	for _, tc := range []struct {
		name, protocol string
		tty            bool
		want           string
	}{
		{"v5 tty", "v5.channel.k8s.io", true, "done"},
		{"v4 no tty", "v4.channel.k8s.io", false, "done"},
		{"v1 tty", "channel.k8s.io", true, "done" + notice},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.claims("/bin/sh", "-c", script)
			c.TTY = tc.tty
			q := url.Values{"command": c.Command, "container": {testContainer}}
			if tc.tty {
				q.Set("tty", "true")
			}
			status, body, ws := e.tryUpgrade(t, upgradeRequest{
				path:   "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?" + q.Encode(),
				header: bearer(e.mint(c)), protocols: []string{tc.protocol}})
			if ws == nil {
				t.Fatalf("upgrade: status %d: %s", status, body)
			}
			defer ws.Close()
			check(t, readFrames(t, ws), tc.want)
		})
	}
}
