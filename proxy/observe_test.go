package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// observeToken is an observer's token for the session sid runs: the same
// target, mode observe, no stdin, the observer's own sub and jti.
func (h *harness) observeToken(sid, sub string, tty bool, mod func(*hmac.Claims), command ...string) string {
	h.t.Helper()
	now := time.Now()
	c := hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ID: hmac.NewID(), IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
		SID:              sid, Namespace: "ns", Pod: "pod", Container: "c", Command: command, TTY: tty, Mode: hmac.ModeObserve,
	}
	if mod != nil {
		mod(&c)
	}
	return h.mint(c)
}

// dialObserver opens an observer connection; inPath puts the token in the
// pod segment as guacd does.
func (h *harness) dialObserver(protocol, tok string, inPath bool) (*websocket.Conn, *http.Response, error) {
	h.t.Helper()
	d := websocket.Dialer{Subprotocols: []string{protocol}}
	u := "ws" + strings.TrimPrefix(h.url, "http") + "/api/v1/namespaces/ns/pods/pod/exec?container=c"
	hdr := http.Header{"Authorization": {"Bearer " + tok}}
	if inPath {
		u = "ws" + strings.TrimPrefix(h.url, "http") + "/api/v1/namespaces/ns/pods/" + tok + "/exec"
		hdr = nil
	}
	ws, resp, err := d.Dial(u, hdr)
	if ws != nil {
		h.t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

// An observer over v5 (and over v4 with the token in the pod segment, as
// guacd sends it) first gets the scrollback, then live output; its stdin
// and resizes never reach the process and are counted; it is listed by
// GET /sessions and logged; it ends with the session.
func TestObserverScrollbackThenLive(t *testing.T) {
	for _, c := range []struct {
		name   string
		proto  string
		inPath bool
	}{{"v5", ProtocolV5, false}, {"v4 token in path", ProtocolV4, true}} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, func(cfg *Config) { cfg.QuietObservers = true })
			admin := h.adminServer()
			owner := h.dialClaims(ProtocolV5, withSubject("alice", "s-obs", false), "cat")
			echo(t, owner, "before\n")

			obs, resp, err := h.dialObserver(c.proto, h.observeToken("s-obs", "bob", false, nil, "cat"), c.inPath)
			if err != nil {
				t.Fatalf("observer dial: %v %v", err, resp)
			}
			if got := resp.Header.Get("Sec-Websocket-Protocol"); got != c.proto {
				t.Fatalf("observer protocol %q", got)
			}
			if got := testenv.ReadChannel(t, obs, chanStdout, "before\n"); got != "before\n" {
				t.Fatalf("scrollback %q", got)
			}
			// Read-only: none of this may reach cat.
			obs.WriteMessage(websocket.BinaryMessage, []byte("\x00typed by the observer\n"))
			obs.WriteMessage(websocket.BinaryMessage, append([]byte{chanResize}, `{"Width":10,"Height":5}`...))
			echo(t, owner, "live\n")
			if got := testenv.ReadChannel(t, obs, chanStdout, "live\n"); got != "live\n" {
				t.Fatalf("live output %q", got)
			}

			var list SessionList
			deadline := time.Now().Add(10 * time.Second)
			for {
				adminCall(t, "GET", admin+"/sessions", h.adminToken(hmac.ScopeSessionsList), &list)
				if len(list.Items) != 1 || len(list.Items[0].Observers) != 1 {
					t.Fatalf("sessions %+v", list.Items)
				}
				// The counters move after the write the client already read.
				if o := list.Items[0].Observers[0]; o.IgnoredResizes == 1 && o.IgnoredStdinBytes == int64(len("typed by the observer\n")) &&
					o.BytesOut == int64(len("before\nlive\n")) {
					if o.Subject != "bob" || o.Protocol != c.proto {
						t.Fatalf("observer %+v", o)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("observer counts %+v", list.Items[0].Observers[0])
				}
				time.Sleep(10 * time.Millisecond)
			}

			got := readAsync(obs, 30*time.Second)
			owner.WriteMessage(websocket.BinaryMessage, []byte{chanClose, chanStdin})
			e := readToEnd(owner, 30*time.Second)
			if string(e.stdout) != "" || e.code != websocket.CloseNormalClosure {
				t.Fatalf("owner saw %q, close %d (stdin of the observer reached cat?)", e.stdout, e.code)
			}
			oe := <-got
			if string(oe.stdout) != "" || oe.code != websocket.CloseNormalClosure {
				t.Fatalf("observer end: %q close %d", oe.stdout, oe.code)
			}
			left := h.log.wait(t, 10*time.Second, "observer left")
			if left["sid"] != "s-obs" || left["reason"] != "observed_session_ended" || left["ignored_resizes"] != 1.0 ||
				left["sub"] != "bob" {
				t.Fatalf("observer left line %v", left)
			}
			if joined := h.log.wait(t, time.Second, "observer joined"); joined["owner_sub"] != "alice" {
				t.Fatalf("observer joined line %v", joined)
			}
		})
	}
}

// The owner reads one line in the terminal when an observer joins and one
// when it leaves (--observer-notice).
func TestObserverNotice(t *testing.T) {
	h := newHarness(t, nil)
	owner := h.dialClaims(ProtocolV5, withSubject("alice", "s-n", true), "cat")
	owner.WriteMessage(websocket.BinaryMessage, []byte("\x00ready\r"))
	testenv.ReadChannel(t, owner, chanStdout, "ready")
	obs, resp, err := h.dialObserver(ProtocolV5, h.observeToken("s-n", "bob\x1b[2J", true, nil, "cat"), false)
	if err != nil {
		t.Fatalf("observer dial: %v %v", err, resp)
	}
	got := testenv.ReadChannel(t, owner, chanStdout, "observers now: 1\r\n")
	if !strings.Contains(got, "[k8s-ws-proxy] bob?[2J is now watching this session (read-only); observers now: 1") {
		t.Fatalf("join notice %q", got)
	}
	obs.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	got = testenv.ReadChannel(t, owner, chanStdout, "observers now: 0\r\n")
	if !strings.Contains(got, "bob?[2J stopped watching this session; observers now: 0") {
		t.Fatalf("leave notice %q", got)
	}
	if left := h.log.wait(t, 10*time.Second, "observer left"); left["reason"] != "client_closed_1000" {
		t.Fatalf("observer left %v", left)
	}
}

// Bad observe tokens are refused before the upgrade with a Status, and
// the session they name carries on.
func TestObserverRefusals(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.QuietObservers = true })
	owner := h.dialClaims(ProtocolV5, withSubject("alice", "s-r", false), "cat")
	echo(t, owner, "one\n")
	for _, c := range []struct {
		name   string
		tok    string
		status int
		want   string
	}{
		{"unknown sid", h.observeToken("s-none", "bob", false, nil, "cat"), 404, `no live session "s-none"`},
		{"other command", h.observeToken("s-r", "bob", false, nil, "sh"), 403, "must be those of the observed session"},
		{"other tty", h.observeToken("s-r", "bob", true, nil, "cat"), 403, "must be those of the observed session"},
		{"other container", h.observeToken("s-r", "bob", false, func(c *hmac.Claims) { c.Container = "d" }, "cat"), 403, "container in the query"},
		{"stdin", h.observeToken("s-r", "bob", false, func(c *hmac.Claims) { c.Stdin = true }, "cat"), 400, "must not grant stdin"},
		{"no sid", h.observeToken("", "bob", false, nil, "cat"), 400, "must name the session"},
		{"resumable", h.observeToken("s-r", "bob", false, func(c *hmac.Claims) { c.Resumable = true }, "cat"), 400, "cannot be resumable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, resp, err := h.dialObserver(ProtocolV5, c.tok, false)
			if err == nil || resp == nil {
				t.Fatalf("upgraded: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			var st metav1.Status
			if json.Unmarshal(body, &st) != nil || resp.StatusCode != c.status || !strings.Contains(st.Message, c.want) {
				t.Fatalf("%d %s, want %d %q", resp.StatusCode, body, c.status, c.want)
			}
		})
	}
	echo(t, owner, "two\n")
	h.log.mu.Lock()
	log := h.log.buf.String()
	h.log.mu.Unlock()
	if strings.Contains(log, "eyJ") {
		t.Fatal("a token part is in the log")
	}
}

// Observers count against --max-sessions-per-subject.
func TestObserverCountsAgainstSubjectLimit(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.QuietObservers = true; cfg.MaxSessionsPerSubject = 1 })
	owner := h.dialClaims(ProtocolV5, withSubject("alice", "s-l", false), "cat")
	echo(t, owner, "x\n")
	if _, resp, err := h.dialObserver(ProtocolV5, h.observeToken("s-l", "alice", false, nil, "cat"), false); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("alice observing her own session at her limit: %v %v", err, resp)
	}
	if _, resp, err := h.dialObserver(ProtocolV5, h.observeToken("s-l", "bob", false, nil, "cat"), false); err != nil {
		t.Fatalf("bob: %v %v", err, resp)
	}
	// Bob's observer now counts for bob.
	if _, resp, err := h.dialObserver(ProtocolV5, h.observeToken("s-l", "bob", false, nil, "cat"), false); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("bob's second observer: %v %v", err, resp)
	}
}

// An observer that stops reading falls behind and is disconnected with
// 1013 and a clear reason once it reads again, while the session's own
// client gets every byte.
func TestObserverFallsBehind(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { cfg.QuietObservers = true })
	admin := h.adminServer()
	const total = 48 << 20
	cmd := []string{"sh", "-c", "read x; head -c 50331648 /dev/zero"}
	owner := h.dialClaims(ProtocolV5, withSubject("alice", "s-slow", false), cmd...)
	h.log.wait(t, 10*time.Second, "session opened")
	obs, resp, err := h.dialObserver(ProtocolV5, h.observeToken("s-slow", "bob", false, nil, cmd...), false)
	if err != nil {
		t.Fatalf("observer dial: %v %v", err, resp)
	}
	h.log.wait(t, 10*time.Second, "observer joined")
	got := readAsync(owner, 60*time.Second)
	owner.WriteMessage(websocket.BinaryMessage, []byte("\x00go\n"))
	// The fan-out drops the observer from the session at once.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var list SessionList
		adminCall(t, "GET", admin+"/sessions", h.adminToken(hmac.ScopeSessionsList), &list)
		if len(list.Items) == 0 {
			t.Fatal("the session ended before its observer fell behind")
		}
		if len(list.Items[0].Observers) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("observer still attached: %+v", list.Items[0])
		}
		time.Sleep(5 * time.Millisecond)
	}
	oe := readToEnd(obs, 30*time.Second)
	var st metav1.Status
	json.Unmarshal([]byte(oe.status), &st)
	if oe.code != websocket.CloseTryAgainLater || st.Reason != ObserverFellBehindReason || len(oe.stdout) >= total {
		t.Fatalf("observer: %d bytes, close %d, status %s", len(oe.stdout), oe.code, oe.status)
	}
	e := <-got
	if len(e.stdout) != total || e.code != websocket.CloseNormalClosure {
		t.Fatalf("owner got %d bytes, close %d", len(e.stdout), e.code)
	}
	left := h.log.wait(t, 10*time.Second, "observer left")
	if left["reason"] != "observer_fell_behind" {
		t.Fatalf("observer left %v", left)
	}
	t.Logf("observer got %d of %d bytes before it was disconnected", len(oe.stdout), total)
}

// With resume off (--resume-window 0), a resumable or resume token is
// refused with 501 before the upgrade instead of silently becoming a
// session that dies on a drop, or a new shell.
func TestResumeClaimsRefused(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ResumeWindow = -1 })
	for name, mod := range map[string]func(*hmac.Claims){
		"resumable": func(c *hmac.Claims) { c.Resumable = true },
		"resume":    func(c *hmac.Claims) { c.Resume = "s-old" },
	} {
		t.Run(name, func(t *testing.T) {
			now := time.Now()
			c := hmac.Claims{
				RegisteredClaims: jwt.RegisteredClaims{ID: hmac.NewID(), IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
				Namespace:        "ns", Pod: "pod", Container: "c", Command: []string{"cat"}, Stdin: true,
			}
			mod(&c)
			_, resp, err := h.dialObserver(ProtocolV5, h.mint(c), false)
			if err == nil || resp == nil {
				t.Fatalf("upgraded: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusNotImplemented || !strings.Contains(string(body), "does not resume sessions") {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
		})
	}
}
