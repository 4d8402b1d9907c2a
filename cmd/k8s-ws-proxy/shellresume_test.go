package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
	streamproto "k8s.io/apimachinery/pkg/util/remotecommand"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/proxy"
)

func TestStdinRing(t *testing.T) {
	r := stdinRing{buf: make([]byte, 8)}
	var all []byte
	for i := range 5 {
		p := bytes.Repeat([]byte{byte('a' + i)}, i+1) // crosses the wrap
		r.add(p)
		all = append(all, p...)
	}
	if r.sent != int64(len(all)) {
		t.Fatalf("sent %d, want %d", r.sent, len(all))
	}
	for off := r.sent - 8; off <= r.sent; off++ {
		got, ok := r.since(off)
		if !ok || !bytes.Equal(got, all[off:]) {
			t.Errorf("since(%d) = %q %v, want %q", off, got, ok, all[off:])
		}
	}
	for _, off := range []int64{r.sent - 9, r.sent + 1, -1} {
		if got, ok := r.since(off); ok {
			t.Errorf("since(%d) = %q, want refused", off, got)
		}
	}
	r.add(bytes.Repeat([]byte("z"), 20)) // longer than the ring
	if got, ok := r.since(r.sent - 8); !ok || string(got) != "zzzzzzzz" {
		t.Errorf("after a long add: %q %v", got, ok)
	}
}

// fakeProxy answers the session's connections in order with the handlers
// given: each gets the upgraded connection and the request.
type fakeProxy struct {
	t         *testing.T
	keepalive time.Duration // the shell's --keepalive
	mu        sync.Mutex
	conns     []func(w http.ResponseWriter, r *http.Request)
	reqs      []*http.Request
}

func (f *fakeProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	i := len(f.reqs)
	f.reqs = append(f.reqs, r)
	f.mu.Unlock()
	if i >= len(f.conns) {
		http.Error(w, "no more", http.StatusTeapot)
		return
	}
	f.conns[i](w, r)
}

func upgrade(t *testing.T, w http.ResponseWriter, r *http.Request, hdr http.Header) *websocket.Conn {
	u := websocket.Upgrader{Subprotocols: []string{streamproto.StreamProtocolV5Name}}
	c, err := u.Upgrade(w, r, hdr)
	if err != nil {
		t.Errorf("upgrade: %v", err)
		return nil
	}
	return c
}

// readStdin reads stdin frames until n payload bytes came.
func readStdin(t *testing.T, c *websocket.Conn, n int) []byte {
	var got []byte
	for len(got) < n {
		_, m, err := c.ReadMessage()
		if err != nil {
			t.Errorf("reading stdin after %d bytes: %v", len(got), err)
			return got
		}
		if len(m) > 0 && m[0] == chStdin {
			got = append(got, m[1:]...)
		}
	}
	return got
}

func send(c *websocket.Conn, ch byte, p string) {
	_ = c.WriteMessage(websocket.BinaryMessage, append([]byte{ch}, p...))
}

func runAgainst(t *testing.T, f *fakeProxy, stdin io.Reader, tokenCommand string) (string, string, error) {
	t.Helper()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := httptest.NewServer(f)
	defer srv.Close()
	var out, notices bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := runResumable(ctx, resumeOptions{
		execURL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/v1/namespaces/ns/pods/p/exec?command=x&stdin=true",
		sid:     "s1", tokenCommand: tokenCommand, retain: 64, resumeTimeout: 5 * time.Second, keepalive: f.keepalive,
		stdin: stdin, stdout: &out, notices: &notices,
	}, "first")
	return out.String(), notices.String(), err
}

// After a drop the shell runs the token command, resumes from the output
// bytes it got, and resends its stdin from the proxy's offset: the proxy
// side sees the stream continue without gap or repeat.
func TestResumingShellResumes(t *testing.T) {
	f := &fakeProxy{t: t}
	var resumeReq *http.Request
	var stdin2 []byte
	f.conns = []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) {
			c := upgrade(t, w, r, nil)
			send(c, chStdout, "hello ")
			readStdin(t, c, 6)
			c.NetConn().Close() // a drop: no close frame
		},
		func(w http.ResponseWriter, r *http.Request) {
			resumeReq = r
			// The proxy took 4 of the 6 bytes: the shell resends "ef", then the rest.
			c := upgrade(t, w, r, http.Header{proxy.HeaderStdinOffset: {"4"}})
			send(c, chStdout, "world")
			stdin2 = readStdin(t, c, 2+3)
			send(c, chStatus, `{"status":"Success"}`)
			_, _, _ = c.ReadMessage() // the client's close
			c.Close()
		},
	}
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte("abcdef"))
		// "ghi" goes to the dropped connection or the resumed one: either
		// way the proxy side gets it once.
		_, _ = pw.Write([]byte("ghi"))
		pw.Close()
	}()
	out, notices, err := runAgainst(t, f, pr, "echo tok-$K8S_WS_PROXY_RESUME-$K8S_WS_PROXY_RESUME_OFFSET")
	if err != nil {
		t.Fatalf("session: %v (notices %q)", err, notices)
	}
	if out != "hello world" {
		t.Errorf("output %q", out)
	}
	if resumeReq == nil {
		t.Fatal("no resume request")
	}
	if got := resumeReq.URL.Query().Get(proxy.ResumeOffsetParam); got != "6" {
		t.Errorf("resume-offset %q, want 6", got)
	}
	if got := resumeReq.Header.Get("Authorization"); got != "Bearer tok-s1-6" {
		t.Errorf("resume token %q, want the token command's output", got)
	}
	if string(stdin2) != "efghi" {
		t.Errorf("stdin on the resumed connection %q, want efghi", stdin2)
	}
	if !strings.Contains(notices, "resumed session s1") || !(strings.Contains(notices, " 2 stdin bytes resent") || strings.Contains(notices, " 5 stdin bytes resent")) {
		t.Errorf("notice %q", notices)
	}
}

// A refusal stops the shell with the proxy's reason; retrying would not help.
func TestResumingShellStopsOnRefusal(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusForbidden, http.StatusConflict, http.StatusGone, http.StatusRequestedRangeNotSatisfiable} {
		f := &fakeProxy{t: t}
		f.conns = []func(http.ResponseWriter, *http.Request){
			func(w http.ResponseWriter, r *http.Request) {
				c := upgrade(t, w, r, nil)
				send(c, chStdout, "x")
				c.NetConn().Close()
			},
			func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				_, _ = io.WriteString(w, `{"kind":"Status","status":"Failure","message":"no session \"s1\" here","reason":"NotFound"}`)
			},
		}
		_, _, err := runAgainst(t, f, nil, "echo tok")
		if err == nil || !strings.Contains(err.Error(), "refused to resume") || !strings.Contains(err.Error(), `no session "s1" here`) ||
			!strings.Contains(err.Error(), fmt.Sprintf("HTTP %d", status)) {
			t.Errorf("status %d: err %v", status, err)
		}
		if len(f.reqs) != 2 {
			t.Errorf("status %d: %d connections, want 2 (no retry after a refusal)", status, len(f.reqs))
		}
	}
}

// Without --token-command a drop ends the shell saying how to resume.
func TestResumingShellNeedsTokenCommand(t *testing.T) {
	f := &fakeProxy{t: t}
	f.conns = []func(http.ResponseWriter, *http.Request){func(w http.ResponseWriter, r *http.Request) {
		c := upgrade(t, w, r, nil)
		c.NetConn().Close()
	}}
	if _, _, err := runAgainst(t, f, nil, ""); err == nil || !strings.Contains(err.Error(), "--token-command") {
		t.Errorf("err %v", err)
	}
}

// A connection that goes silent without a reset (the proxy neither sends
// nor answers pings: a black-holed path) is a drop after two keepalive
// periods, and the shell resumes from the bytes it got.
func TestResumingShellResumesASilentConnection(t *testing.T) {
	f := &fakeProxy{t: t, keepalive: 100 * time.Millisecond}
	var resumeReq *http.Request
	f.conns = []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) {
			c := upgrade(t, w, r, nil)
			send(c, chStdout, "hello ")
			// Pings are swallowed, not answered, until the shell hangs up.
			c.SetPingHandler(func(string) error { return nil })
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					break
				}
			}
			c.Close()
		},
		func(w http.ResponseWriter, r *http.Request) {
			resumeReq = r
			c := upgrade(t, w, r, http.Header{proxy.HeaderStdinOffset: {"0"}})
			send(c, chStdout, "world")
			send(c, chStatus, `{"status":"Success"}`)
			_, _, _ = c.ReadMessage() // the client's close
			c.Close()
		},
	}
	out, notices, err := runAgainst(t, f, nil, "echo tok")
	if err != nil {
		t.Fatalf("session: %v (notices %q)", err, notices)
	}
	if out != "hello world" {
		t.Errorf("output %q", out)
	}
	if resumeReq == nil || resumeReq.URL.Query().Get(proxy.ResumeOffsetParam) != "6" {
		t.Fatalf("resume request %v, want one from offset 6", resumeReq)
	}
	if !strings.Contains(notices, "timeout") || !strings.Contains(notices, "resumed session s1") {
		t.Errorf("notice %q, want the timeout and the resume", notices)
	}
}
