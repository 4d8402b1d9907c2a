package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// newResumeHarness is newHarness whose cleanup first ends every session:
// a detached one would otherwise wait out its window.
func newResumeHarness(t *testing.T, mod func(*Config)) *harness {
	h := newHarness(t, mod)
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		h.srv.Drain(ctx)
	})
	return h
}

// resumableClaims are a resumable cat session's claims for sub and sid.
func resumableClaims(sub, sid string, command ...string) hmac.Claims {
	now := time.Now()
	if len(command) == 0 {
		command = []string{"cat"}
	}
	return hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ID: hmac.NewID(), IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
		SID:              sid, Namespace: "ns", Pod: "pod", Container: "c", Command: command, Stdin: true, Resumable: true,
	}
}

// resumeClaims are the claims of a resume of sid.
func resumeClaims(sub, sid string, command ...string) hmac.Claims {
	c := resumableClaims(sub, "", command...)
	c.Resumable, c.Resume = false, sid
	return c
}

// dialResume opens a connection with claims c; offset < 0 sends no
// resume-offset.
// startResumable opens a new resumable session of alice's over v5.
func (h *harness) startResumable(t *testing.T, sid string) *websocket.Conn {
	t.Helper()
	ws, _, err := h.dialResume(ProtocolV5, resumableClaims("alice", sid), -1)
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

func (h *harness) dialResume(protocol string, c hmac.Claims, offset int64) (*websocket.Conn, *http.Response, error) {
	h.t.Helper()
	u := "ws" + strings.TrimPrefix(h.url, "http") + "/api/v1/namespaces/ns/pods/pod/exec?container=c"
	for _, a := range c.Command {
		u += "&command=" + a
	}
	if offset >= 0 {
		u += "&" + ResumeOffsetParam + "=" + strconv.FormatInt(offset, 10)
	}
	d := websocket.Dialer{Subprotocols: []string{protocol}}
	ws, resp, err := d.Dial(u, http.Header{"Authorization": {"Bearer " + h.mint(c)}})
	if ws != nil {
		h.t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

// drop ends the client's TCP connection without a close frame: with reset,
// as a reset (SO_LINGER 0), else as a bare EOF.
func drop(t *testing.T, ws *websocket.Conn, reset bool) {
	t.Helper()
	if reset {
		if err := ws.NetConn().(*net.TCPConn).SetLinger(0); err != nil {
			t.Fatal(err)
		}
	}
	ws.NetConn().Close()
}

// statusOf reads a refused dial's status code and body.
func statusOf(t *testing.T, resp *http.Response, err error) (int, string) {
	t.Helper()
	if err == nil || resp == nil {
		t.Fatalf("upgraded (err %v)", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// A v5 client that drops (bare EOF, and a reset) resumes with a new token
// and its output count: it gets exactly the output it missed and then live
// output; the header says how much stdin the proxy took, so nothing typed
// before the drop reaches the process twice; the closed line counts the
// resumes; GET /sessions shows the detached state in between.
func TestResumeReplaysMissedOutput(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(fmt.Sprintf("reset=%v", reset), func(t *testing.T) {
			h := newResumeHarness(t, nil)
			admin := h.adminServer()
			ws := h.startResumable(t, "s-res")
			echo(t, ws, "one\n")
			// Written and dropped at once: the line may or may not have come
			// back before the drop; either way it is replayed from byte 4.
			ws.WriteMessage(websocket.BinaryMessage, []byte("\x00two\n"))
			if !reset {
				// A reset may discard what the proxy did not read yet: only
				// with a bare EOF is the line sure to arrive.
				drop(t, ws, false)
			} else {
				// Let "two" come back first, so the reset discards nothing.
				testenv.ReadChannel(t, ws, chanStdout, "two\n")
				drop(t, ws, true)
			}
			det := h.log.wait(t, 10*time.Second, "session detached")
			if want := map[bool]string{false: "client_gone", true: "connection_reset"}[reset]; det["reason"] != want {
				t.Fatalf("detached %v, want reason %s", det, want)
			}
			var list SessionList
			adminCall(t, "GET", admin+"/sessions", h.adminToken(hmac.ScopeSessionsList), &list)
			if len(list.Items) != 1 || list.Items[0].Resume == nil || list.Items[0].Resume.Attached || list.Items[0].Resume.DetachedSince == nil {
				t.Fatalf("sessions while detached %+v", list.Items)
			}

			start := time.Now()
			ws2, resp, err := h.dialResume(ProtocolV5, resumeClaims("alice", "s-res"), 4)
			if err != nil {
				t.Fatalf("resume: %v %v", err, resp)
			}
			if got := resp.Header.Get(HeaderStdinOffset); got != "8" {
				t.Fatalf("stdin offset %q, want 8 (one\\n two\\n)", got)
			}
			if got := testenv.ReadChannel(t, ws2, chanStdout, "two\n"); got != "two\n" {
				t.Fatalf("replay %q", got)
			}
			t.Logf("resume latency (dial to replayed output) %v", time.Since(start))
			echo(t, ws2, "three\n")
			ws2.WriteMessage(websocket.BinaryMessage, []byte{chanClose, chanStdin})
			e := readToEnd(ws2, 30*time.Second)
			if e.code != websocket.CloseNormalClosure || !strings.Contains(e.status, "Success") {
				t.Fatalf("end %+v", e)
			}
			closed := h.log.wait(t, 10*time.Second, "session closed")
			if closed["reason"] != "exited" || closed["resumes"] != float64(1) || closed["bytes_out"] != float64(len("one\ntwo\nthree\n")) {
				t.Fatalf("closed %v", closed)
			}
		})
	}
}

// A drop after the exit status was written but before the client answered
// the close (the status may never have arrived) leaves the session
// resumable: the resume gets the missed output, the status and close 1000.
func TestResumeAfterTheExitStatus(t *testing.T) {
	h := newResumeHarness(t, nil)
	ws, _, err := h.dialResume(ProtocolV5, resumableClaims("alice", "s-end"), -1)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, ws, "last\n")
	ws.WriteMessage(websocket.BinaryMessage, []byte{chanClose, chanStdin}) // cat exits
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		// Up to the status frame only: reading the close frame would answer it.
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("before the status: %v", err)
		}
		if len(msg) > 0 && msg[0] == chanError {
			break
		}
	}
	drop(t, ws, true)
	h.log.wait(t, 10*time.Second, "session detached")
	ws2, resp, err := h.dialResume(ProtocolV5, resumeClaims("alice", "s-end"), 0)
	if err != nil {
		t.Fatalf("resume after the status: %v %v", err, resp)
	}
	e := readToEnd(ws2, 30*time.Second)
	if string(e.stdout) != "last\n" || !strings.Contains(e.status, "Success") || e.code != websocket.CloseNormalClosure {
		t.Fatalf("resumed end: stdout %q status %q close %d", e.stdout, e.status, e.code)
	}
	closed := h.log.wait(t, 10*time.Second, "session closed")
	if closed["reason"] != "exited" || closed["resumes"] != float64(1) || closed["exit_code"] != float64(0) {
		t.Fatalf("closed %v", closed)
	}
}

// A resume while the old connection is still attached takes over: the old
// one gets close 4001, the new one the output from its offset.
func TestResumeTakesOver(t *testing.T) {
	h := newResumeHarness(t, nil)
	old := h.startResumable(t, "s-take")
	echo(t, old, "a\n")
	oldEnd := readAsync(old, 30*time.Second)
	ws, resp, err := h.dialResume(ProtocolV5, resumeClaims("alice", "s-take"), 0)
	if err != nil {
		t.Fatalf("resume: %v %v", err, resp)
	}
	if e := <-oldEnd; e.code != CloseTakenOver {
		t.Fatalf("old connection ended %+v, want close %d", e, CloseTakenOver)
	}
	if got := testenv.ReadChannel(t, ws, chanStdout, "a\n"); got != "a\n" {
		t.Fatalf("replay from 0: %q", got)
	}
	echo(t, ws, "b\n")
	det := h.log.wait(t, 10*time.Second, "session resumed")
	if det["took_over"] != true || det["replayed_bytes"] != float64(2) {
		t.Fatalf("resumed %v", det)
	}
}

// A client that stops answering pings is detached (ping_timeout), not
// ended, and resumes.
func TestResumeAfterPingTimeout(t *testing.T) {
	h := newResumeHarness(t, func(c *Config) { c.PingInterval = 100 * time.Millisecond })
	ws := h.startResumable(t, "s-ping")
	echo(t, ws, "x\n")
	// Not reading: gorilla answers pings only while reading.
	if det := h.log.wait(t, 10*time.Second, "session detached"); det["reason"] != "ping_timeout" {
		t.Fatalf("detached %v", det)
	}
	ws2, resp, err := h.dialResume(ProtocolV5, resumeClaims("alice", "s-ping"), 2)
	if err != nil {
		t.Fatalf("resume: %v %v", err, resp)
	}
	echo(t, ws2, "y\n")
}

// Endings that are not drops end a resumable session as always: a close
// frame, and a bare EOF on v4 (guacd's way of leaving). No process stays.
func TestResumableEndsOnNormalLeave(t *testing.T) {
	for _, c := range []struct {
		name, proto, reason string
		leave               func(*websocket.Conn)
	}{
		{"close frame", ProtocolV5, "client_closed_1000", func(ws *websocket.Conn) {
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		}},
		{"v4 eof", ProtocolV4, "client_gone", func(ws *websocket.Conn) { ws.NetConn().Close() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newResumeHarness(t, nil)
			ws, _, err := h.dialResume(c.proto, resumableClaims("alice", "s-leave"), -1)
			if err != nil {
				t.Fatal(err)
			}
			echo(t, ws, "x\n")
			c.leave(ws)
			if closed := h.log.wait(t, 10*time.Second, "session closed"); closed["reason"] != c.reason {
				t.Fatalf("closed %v", closed)
			}
			if err := h.waitProcesses(10*time.Second, 0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Every bad resume is refused before the upgrade with a Status saying why,
// and leaves the session alone: the attached client goes on echoing, and a
// good resume afterwards still works.
func TestResumeRefusals(t *testing.T) {
	h := newResumeHarness(t, func(c *Config) { c.ResumeBuffer = MinResumeBuffer })
	owner := h.startResumable(t, "s-bad")
	// More output than the buffer holds: byte 0 is gone.
	big := append(bytes.Repeat([]byte("0123456789abcdef"), MinResumeBuffer/16+1024), "END\n"...)
	for i := 0; i < len(big); i += 16 << 10 {
		owner.WriteMessage(websocket.BinaryMessage, append([]byte{chanStdin}, big[i:min(i+16<<10, len(big))]...))
	}
	if got := testenv.ReadChannel(t, owner, chanStdout, "END\n"); got != string(big) {
		t.Fatalf("read %d bytes back, want %d", len(got), len(big))
	}
	// sent is what the owner's session has sent so far; the offsets below
	// that are relative to it are -2 (sent) and -3 (sent+1).
	sent := int64(len(big))
	const atSent, pastSent = -2, -3
	plain, _, err := h.dialResume(ProtocolV5, func() hmac.Claims {
		c := resumableClaims("alice", "s-plain")
		c.Resumable = false
		return c
	}(), -1)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, plain, "p\n")
	other := func(edit func(*hmac.Claims)) hmac.Claims {
		c := resumeClaims("alice", "s-bad")
		edit(&c)
		return c
	}
	for _, c := range []struct {
		name   string
		claims hmac.Claims
		offset int64
		status int
		reason string
		msg    string
	}{
		{"unknown sid", resumeClaims("alice", "s-nope"), 0, 404, "resume_unknown_session", "on this proxy to resume"},
		{"wrong sub", resumeClaims("mallory", "s-bad"), atSent, 403, "resume_subject_mismatch", "sub is not the sub"},
		{"wrong target", other(func(c *hmac.Claims) { c.TTY = true }), atSent, 403, "resume_target_mismatch", "must be those of session"},
		{"wrong command", resumeClaims("alice", "s-bad", "sh"), atSent, 403, "resume_target_mismatch", "must be those of session"},
		{"offset beyond sent", resumeClaims("alice", "s-bad"), pastSent, 416, "resume_offset_beyond_sent", "output bytes the session has sent"},
		{"offset no longer buffered", resumeClaims("alice", "s-bad"), 0, 416, "resume_offset_not_buffered", "no longer buffered"},
		{"not resumable", resumeClaims("alice", "s-plain"), 2, 409, "resume_not_resumable", "not opened with a resumable token"},
		{"no offset", resumeClaims("alice", "s-bad"), -1, 400, "resume_offset_missing", "needs ?resume-offset"},
		{"resumable without sid", resumableClaims("alice", ""), -1, 400, "resumable_without_sid", "needs a sid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			off := c.offset
			switch off {
			case atSent:
				off = sent
			case pastSent:
				off = sent + 1
			}
			_, resp, err := h.dialResume(ProtocolV5, c.claims, off)
			code, body := statusOf(t, resp, err)
			if code != c.status || !strings.Contains(body, c.msg) || !strings.Contains(body, `"kind":"Status"`) {
				t.Fatalf("%d %s; want %d with %q", code, body, c.status, c.msg)
			}
			h.waitReason(t, c.reason)
			echo(t, owner, "still here\n")
			sent += int64(len("still here\n"))
			echo(t, plain, "p\n")
		})
	}
	for name, q := range map[string]string{"bad offset": "-1", "two offsets": "1&resume-offset=2", "not digits": "1e3", "too long": strings.Repeat("9", 20)} {
		t.Run(name, func(t *testing.T) {
			u := "ws" + strings.TrimPrefix(h.url, "http") + "/api/v1/namespaces/ns/pods/pod/exec?container=c&command=cat&resume-offset=" + q
			_, resp, err := websocket.DefaultDialer.Dial(u, http.Header{"Authorization": {"Bearer " + h.mint(resumeClaims("alice", "s-bad"))}})
			if code, body := statusOf(t, resp, err); code != 400 || !strings.Contains(body, "resume-offset") {
				t.Fatalf("%d %s", code, body)
			}
		})
	}
	ws, resp, err := h.dialResume(ProtocolV5, resumeClaims("alice", "s-bad"), sent)
	if err != nil {
		t.Fatalf("good resume after the refusals: %v %v", err, resp)
	}
	echo(t, ws, "after\n")
}

// A detached session nobody resumes ends when the window expires: its
// process is gone, the closed line says why, and a late resume is told.
func TestResumeWindowExpires(t *testing.T) {
	h := newResumeHarness(t, func(c *Config) { c.ResumeWindow = 300 * time.Millisecond })
	ws := h.startResumable(t, "s-exp")
	echo(t, ws, "x\n")
	drop(t, ws, false)
	if closed := h.log.wait(t, 10*time.Second, "session closed"); closed["reason"] != "resume_window_expired" {
		t.Fatalf("closed %v", closed)
	}
	if err := h.waitProcesses(10*time.Second, 0); err != nil {
		t.Fatal(err)
	}
	_, resp, err := h.dialResume(ProtocolV5, resumeClaims("alice", "s-exp"), 2)
	if code, body := statusOf(t, resp, err); code != http.StatusGone || !strings.Contains(body, "within the resume window") {
		t.Fatalf("%d %s", code, body)
	}
}

// With resume off, resumable and resume tokens are refused (501).
func TestResumeOff(t *testing.T) {
	h := newResumeHarness(t, func(c *Config) { c.ResumeWindow = -1 })
	for name, c := range map[string]hmac.Claims{"resumable": resumableClaims("a", "s"), "resume": resumeClaims("a", "s")} {
		_, resp, err := h.dialResume(ProtocolV5, c, 0)
		if name == "resumable" {
			_, resp, err = h.dialResume(ProtocolV5, c, -1)
		}
		if code, body := statusOf(t, resp, err); code != http.StatusNotImplemented || !strings.Contains(body, "does not resume sessions") {
			t.Fatalf("%s: %d %s", name, code, body)
		}
	}
}

// Stdin sent through connections that are cut reaches the process exactly
// once: the client resends from the proxy's stdin offset. sha256sum of the
// stream, computed by the process, must be the stream's.
func TestResumeStdinExactlyOnce(t *testing.T) {
	h := newResumeHarness(t, nil)
	data := pattern(8 << 20)
	want := sha256.Sum256(data)
	claims := resumableClaims("alice", "s-stdin", "sha256sum")
	ws, _, err := h.dialResume(ProtocolV5, claims, -1)
	if err != nil {
		t.Fatal(err)
	}
	sent, cuts := 0, 0
	var out []byte
	for attempt := 0; attempt < 10; attempt++ {
		// Send until the next cut point (or the end), then cut.
		cutAt := len(data)
		if cuts < 2 {
			cutAt = len(data) * (cuts + 1) / 3
		}
		for sent < cutAt {
			n := min(32<<10, cutAt-sent)
			if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{chanStdin}, data[sent:sent+n]...)); err != nil {
				break
			}
			sent += n
		}
		if cuts < 2 {
			drop(t, ws, true)
			cuts++
			h.log.wait(t, 10*time.Second, "session detached")
			h.log.mu.Lock()
			h.log.buf.Reset()
			h.log.mu.Unlock()
			var resp *http.Response
			ws, resp, err = h.dialResume(ProtocolV5, resumeClaims("alice", "s-stdin", "sha256sum"), int64(len(out)))
			if err != nil {
				t.Fatalf("resume %d: %v %v", cuts, err, resp)
			}
			m, err := strconv.Atoi(resp.Header.Get(HeaderStdinOffset))
			if err != nil || m > sent {
				t.Fatalf("stdin offset %q (sent %d)", resp.Header.Get(HeaderStdinOffset), sent)
			}
			t.Logf("cut %d: sent %d, the proxy had %d; resending %d", cuts, sent, m, sent-m)
			sent = m
			continue
		}
		ws.WriteMessage(websocket.BinaryMessage, []byte{chanClose, chanStdin})
		e := readToEnd(ws, 60*time.Second)
		out = append(out, e.stdout...)
		if !strings.Contains(e.status, "Success") {
			t.Fatalf("end %+v", e)
		}
		break
	}
	if got := strings.Fields(string(out)); len(got) == 0 || got[0] != hex.EncodeToString(want[:]) {
		t.Fatalf("process computed %q, want %x", out, want)
	}
}

// waitReason waits for a refusal logged with reason.
func (h *harness) waitReason(t *testing.T, reason string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		recs, changed := h.log.records("session rejected")
		for _, r := range recs {
			if r["reason"] == reason {
				return
			}
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no refusal with reason %s", reason)
		}
	}
}

func FuzzResumeOffset(f *testing.F) {
	for _, s := range []string{"0", "4", "9223372036854775807", "9223372036854775808", "-1", "+1", " 1", "1e3", "", "00012"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseResumeOffset([]string{s})
		if err != nil {
			return
		}
		if n < 0 || strconv.FormatInt(n, 10) != strings.TrimLeft(s, "0") && !(n == 0 && strings.Trim(s, "0") == "") {
			t.Fatalf("%q parsed as %d", s, n)
		}
	})
}

// DELETE /sessions?sub=X and the revocations file end observers whose own
// token's sub is X, and leave the watched session (another sub) alone.
func TestRevokeObserverBySubject(t *testing.T) {
	for _, via := range []string{"admin", "file"} {
		t.Run(via, func(t *testing.T) {
			h := newResumeHarness(t, func(cfg *Config) { cfg.QuietObservers = true })
			admin := h.adminServer()
			owner := h.dialClaims(ProtocolV5, withSubject("alice", "s-obsrev", false), "cat")
			echo(t, owner, "x\n")
			obs, resp, err := h.dialObserver(ProtocolV5, h.observeToken("s-obsrev", "bob", false, nil, "cat"), false)
			if err != nil {
				t.Fatalf("observer: %v %v", err, resp)
			}
			testenv.ReadChannel(t, obs, chanStdout, "x\n")
			end := readAsync(obs, 10*time.Second)
			if via == "admin" {
				var rv Revoked
				if code := adminCall(t, "DELETE", admin+"/sessions?sub=bob", h.adminToken(hmac.ScopeSessionsRevoke), &rv); code != 200 || len(rv.Revoked) != 1 {
					t.Fatalf("DELETE: %d %+v", code, rv)
				}
			} else {
				h.srv.SetRevocations(Revocations{Subjects: map[string]bool{"bob": true}})
			}
			if e := <-end; e.code != websocket.ClosePolicyViolation || !strings.Contains(e.status, "Revoked") {
				t.Fatalf("observer ended %+v", e)
			}
			if left := h.log.wait(t, 10*time.Second, "observer left"); left["reason"] != "revoked" {
				t.Fatalf("observer left %v", left)
			}
			echo(t, owner, "still\n")
		})
	}
}
