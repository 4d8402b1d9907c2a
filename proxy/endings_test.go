package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
)

// endBound is what a test allows an ending past its trigger: the proxy's
// endingGrace (2 s) and a second of teardown (a literal, so that these
// tests also build against the code before the fix).
const endBound = 3 * time.Second

// upstreams are the exec transports toward the backend that the endings
// are tested on (auto is SPDY toward localexec, which has no v5).
var upstreams = []exec.Transport{exec.TransportWebSocket, exec.TransportSPDY}

// eachUpstream runs f in a subtest per upstream transport, on a harness
// whose exec goes to the backend over that transport (mod as for
// newHarness).
func eachUpstream(t *testing.T, mod func(*Config), f func(t *testing.T, h *harness)) {
	t.Helper()
	for _, tr := range upstreams {
		t.Run(string(tr), func(t *testing.T) { f(t, newHarnessVia(t, tr, mod)) })
	}
}

// clientProtocols are the client protocols with binary frames.
var clientProtocols = []string{ProtocolV5, ProtocolV4, ProtocolV1}

// lockedLines is the proxy's JSON log.
type lockedLines struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (l *lockedLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	return len(p), nil
}

func (l *lockedLines) records(msg string) (out []map[string]any, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for line := range strings.SplitSeq(l.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return out, l.changed
}

// wait returns the first record with msg, woken by each log line.
func (l *lockedLines) wait(t *testing.T, within time.Duration, msg string) map[string]any {
	t.Helper()
	timeout := time.After(within)
	for {
		recs, changed := l.records(msg)
		if len(recs) > 0 {
			return recs[0]
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no %q log line within %v", msg, within)
		}
	}
}

// ending is what a client saw of a session: its output and how it ended.
type ending struct {
	stdout, stderr []byte
	status         string
	code           int // close code; 1006 for a connection that ended without one
	frames         [][]byte
}

// readToEnd reads every frame until the connection ends.
func readToEnd(ws *websocket.Conn, within time.Duration) ending {
	var e ending
	ws.SetReadDeadline(time.Now().Add(within))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				e.code = ce.Code
			} else {
				e.code = websocket.CloseAbnormalClosure
			}
			return e
		}
		if len(msg) == 0 {
			continue
		}
		e.frames = append(e.frames, msg)
		switch msg[0] {
		case chanStdout:
			e.stdout = append(e.stdout, msg[1:]...)
		case chanStderr:
			e.stderr = append(e.stderr, msg[1:]...)
		case chanError:
			e.status = string(msg[1:])
		}
	}
}

// readAsync runs readToEnd in the background.
func readAsync(ws *websocket.Conn, within time.Duration) <-chan ending {
	ch := make(chan ending, 1)
	go func() { ch <- readToEnd(ws, within) }()
	return ch
}

// waitProcesses polls the backend (its processes are another goroutine's
// children, with no event to wait on) until it runs n session processes.
func (h *harness) waitProcesses(within time.Duration, n int) error {
	deadline := time.Now().Add(within)
	for {
		p := h.backend.PIDs()
		if len(p) == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("backend runs %v, want %d processes, after %v", p, n, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// flood sends stdin until a write has been blocked for 300 ms (the proxy
// stopped reading: every buffer up to the process is full) or fails, and
// then reports how much it sent.
func flood(ws *websocket.Conn) <-chan int {
	done := make(chan int, 1)
	go func() {
		msg := make([]byte, 1+32<<10)
		sent := 0
		for {
			ws.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				done <- sent
				return
			}
			sent += len(msg) - 1
		}
	}()
	return done
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// Item 1: a process that does not read stdin for many ping periods while
// the client keeps sending must not end the session: nothing is lost.
func TestBusyProcessKeepsSession(t *testing.T) {
	// Not parallel: starved of CPU by another test, the client misses the
	// pings this test relies on being answered. The 500 ms ping leaves a
	// loaded machine a second to answer; the process stays busy for four
	// ping periods (the bug ended the session after two).
	const size = 24 << 20
	for _, tr := range upstreams {
		for _, proto := range clientProtocols {
			t.Run(string(tr)+"/"+proto, func(t *testing.T) {
				h := newHarnessVia(t, tr, func(c *Config) { c.PingInterval = 500 * time.Millisecond })
				// Busy for four ping periods, then it reads everything; its
				// answer (the hash) shows nothing was lost or reordered.
				ws := h.dial(proto, "sh", "-c", fmt.Sprintf("sleep 2; head -c %d | sha256sum", size))
				got := readAsync(ws, 60*time.Second)
				in := pattern(size)
				sendErr := make(chan error, 1)
				go func() {
					for off := 0; off < len(in); off += 32 << 10 {
						msg := append([]byte{chanStdin}, in[off:min(off+32<<10, len(in))]...)
						if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
							sendErr <- err
							return
						}
					}
					sendErr <- nil
				}()
				e := <-got
				if err := <-sendErr; err != nil {
					t.Errorf("sending stdin: %v", err)
				}
				want := fmt.Sprintf("%x  -\n", sha256.Sum256(in))
				if e.code != websocket.CloseNormalClosure || string(e.stdout) != want {
					t.Fatalf("close %d, stdout %q, want %q; status %q", e.code, e.stdout, want, e.status)
				}
				if proto != ProtocolV1 && e.status != `{"metadata":{},"status":"Success"}` {
					t.Fatalf("status %q", e.status)
				}
			})
		}
	}
}

// Item 2: a client that neither reads nor answers pings, while the
// process floods output (so the writer is stalled), has its exec stopped
// within two ping periods plus a second.
func TestDeadClientStopsExec(t *testing.T) {
	const ping = 200 * time.Millisecond
	eachUpstream(t, func(c *Config) { c.PingInterval = ping }, func(t *testing.T, h *harness) {
		start := time.Now()
		h.dial(ProtocolV4, "yes") // never read: no pong, no output taken
		if err := h.waitProcesses(10*time.Second, 1); err != nil {
			t.Fatal(err)
		}
		if err := h.waitProcesses(2*ping+time.Second-time.Since(start), 0); err != nil {
			t.Fatalf("%v (dead client since %v)", err, time.Since(start))
		}
		closed := h.log.wait(t, 5*time.Second, "session closed")
		if closed["reason"] != "ping_timeout" {
			t.Fatalf("reason %v, want ping_timeout", closed["reason"])
		}
	})
}

// Item 3: a status longer than a frame stays valid JSON.
func TestLongStatusStaysWhole(t *testing.T) {
	t.Parallel()
	const limit = 300
	long := "no-such-command-" + strings.Repeat("x", 500)
	for _, tr := range upstreams {
		for _, proto := range clientProtocols {
			t.Run(string(tr)+"/"+proto, func(t *testing.T) {
				h := newHarnessVia(t, tr, func(c *Config) { c.MaxFrameSize = limit })
				e := readToEnd(h.dial(proto, long), 30*time.Second)
				if e.code != websocket.CloseInternalServerErr {
					t.Fatalf("close %d, want 1011", e.code)
				}
				for _, f := range e.frames {
					if len(f) > limit {
						t.Fatalf("frame of %d bytes, limit %d", len(f), limit)
					}
				}
				if !utf8.ValidString(e.status) || !strings.Contains(e.status, "no-such-command") {
					t.Fatalf("status %q", e.status)
				}
				if proto == ProtocolV1 {
					return
				}
				var st struct{ Status, Message string }
				if err := json.Unmarshal([]byte(e.status), &st); err != nil || st.Status != "Failure" || st.Message == "" {
					t.Fatalf("status %q is not a whole Failure status: %v", e.status, err)
				}
			})
		}
	}
}

// Item 5: without a tty, every frame holds whole UTF-8 characters.
func TestNonTTYFramesKeepCharactersWhole(t *testing.T) {
	t.Parallel()
	const lines = 20000
	line := "héllo wörld ✓\n"
	want := strings.Repeat(line, lines)
	for _, tr := range upstreams {
		for _, proto := range clientProtocols {
			t.Run(string(tr)+"/"+proto, func(t *testing.T) {
				h := newHarnessVia(t, tr, func(c *Config) { c.MaxFrameSize = 64 })
				e := readToEnd(h.dial(proto, "sh", "-c", fmt.Sprintf("yes '%s' | head -n %d", strings.TrimSuffix(line, "\n"), lines)), 60*time.Second)
				if e.code != websocket.CloseNormalClosure || string(e.stdout) != want {
					t.Fatalf("close %d, %d bytes of %d", e.code, len(e.stdout), len(want))
				}
				for i, f := range e.frames {
					if len(f) > 64 {
						t.Fatalf("frame %d: %d bytes", i, len(f))
					}
					if f[0] == chanStdout && !utf8.Valid(f[1:]) {
						t.Fatalf("frame %d splits a character: %q", i, f[1:])
					}
				}
			})
		}
	}
}

// Item 6: a cut connection to the backend is a failure on every
// transport and protocol.
func TestCutUpstreamReportsFailure(t *testing.T) {
	for _, tr := range upstreams {
		for _, proto := range clientProtocols {
			t.Run(string(tr)+"/"+proto, func(t *testing.T) {
				h := newHarnessCut(t, tr, nil)
				ws := h.dial(proto, "cat")
				echo(t, ws, "before-cut\n")
				h.cut.Cut()
				e := readToEnd(ws, 30*time.Second)
				if e.code != websocket.CloseInternalServerErr {
					t.Fatalf("close %d status %q, want 1011", e.code, e.status)
				}
				switch proto {
				case ProtocolV1:
					if e.status == "" || strings.HasPrefix(e.status, "{") {
						t.Fatalf("v1 status %q, want the error text", e.status)
					}
				default:
					if !strings.Contains(e.status, `"status":"Failure"`) {
						t.Fatalf("status %q, want Failure", e.status)
					}
				}
				if r := h.log.wait(t, 5*time.Second, "session closed")["reason"]; r != "exec_failed" {
					t.Fatalf("reason %v", r)
				}
			})
		}
	}
}

// blockedStdin opens a session whose process never reads stdin while the
// client keeps sending, and returns once the process runs.
func (h *harness) blockedStdin(t *testing.T, proto string) (*websocket.Conn, <-chan ending, <-chan int) {
	t.Helper()
	ws := h.dial(proto, "sh", "-c", "exec sleep 600")
	got := readAsync(ws, 60*time.Second)
	sent := flood(ws)
	if err := h.waitProcesses(10*time.Second, 1); err != nil {
		t.Fatal(err)
	}
	return ws, got, sent
}

// Items 7 and 8: whatever the upstream transport is doing with a blocked
// stdin, the limits and the drain end the session and its process in
// bounded time.
func TestStdinBlockedSessionsEnd(t *testing.T) {
	bound := endBound
	for _, tr := range upstreams {
		t.Run(string(tr)+"/lifetime", func(t *testing.T) {
			h := newHarnessVia(t, tr, func(c *Config) { c.MaxLifetime = 2 * time.Second })
			start := time.Now()
			_, got, _ := h.blockedStdin(t, ProtocolV5)
			select {
			case e := <-got:
				if e.code != closePolicy || !strings.Contains(e.status, "maximum lifetime") {
					t.Fatalf("close %d status %q", e.code, e.status)
				}
			case <-time.After(2*time.Second + bound - time.Since(start)):
				t.Fatal("the session outlived its lifetime")
			}
			if err := h.waitProcesses(bound, 0); err != nil {
				t.Fatal(err)
			}
		})
		t.Run(string(tr)+"/idle", func(t *testing.T) {
			h := newHarnessVia(t, tr, func(c *Config) { c.IdleTimeout = 2 * time.Second })
			_, got, _ := h.blockedStdin(t, ProtocolV5)
			select {
			case e := <-got:
				if e.code != closePolicy {
					t.Fatalf("close %d status %q", e.code, e.status)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the idle session was not ended")
			}
			if err := h.waitProcesses(bound, 0); err != nil {
				t.Fatal(err)
			}
		})
		t.Run(string(tr)+"/drain", func(t *testing.T) {
			h := newHarnessVia(t, tr, nil)
			_, got, _ := h.blockedStdin(t, ProtocolV5)
			h.drainWithin(t, 300*time.Millisecond, bound)
			if e := <-got; e.code != websocket.CloseGoingAway {
				t.Fatalf("close %d status %q", e.code, e.status)
			}
			if err := h.waitProcesses(bound, 0); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// drainWithin drains with a grace and fails unless the drain is over
// within grace plus bound.
func (h *harness) drainWithin(t *testing.T, grace, bound time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	done := make(chan struct{})
	go func() { h.srv.Drain(ctx); close(done) }()
	select {
	case <-done:
		t.Logf("drained in %v", time.Since(start))
	case <-time.After(grace + bound):
		t.Fatalf("drain not over %v after its %v grace", bound, grace)
	}
}

// Item 8: a client that never reads cannot stretch the drain.
func TestDrainBoundedWithNonReadingClient(t *testing.T) {
	eachUpstream(t, nil, func(t *testing.T, h *harness) {
		h.dial(ProtocolV4, "yes") // never read
		if err := h.waitProcesses(10*time.Second, 1); err != nil {
			t.Fatal(err)
		}
		h.drainWithin(t, 300*time.Millisecond, endBound)
		if err := h.waitProcesses(endBound, 0); err != nil {
			t.Fatal(err)
		}
	})
}

// Item 9: a client that vanishes while its stdin is blocked takes its
// process along within two ping periods plus a second.
func TestVanishedClientWithStdinBlocked(t *testing.T) {
	const ping = 200 * time.Millisecond
	eachUpstream(t, func(c *Config) { c.PingInterval = ping }, func(t *testing.T, h *harness) {
		ws, _, sent := h.blockedStdin(t, ProtocolV5)
		select {
		case n := <-sent:
			t.Logf("the client's stdin stalled after %d bytes", n)
		case <-time.After(30 * time.Second):
			t.Fatal("the client's stdin never stalled")
		}
		gone := time.Now()
		ws.NetConn().(*net.TCPConn).SetLinger(0)
		ws.NetConn().Close()
		if err := h.waitProcesses(2*ping+time.Second, 0); err != nil {
			t.Fatalf("%v (client gone %v ago)", err, time.Since(gone))
		}
	})
}
