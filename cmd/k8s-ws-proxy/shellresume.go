package main

// The shell's client for resumable sessions (docs/wire-protocol.md#resume).
// client-go's executor neither counts the output bytes it received nor
// shows the headers of the upgrade answer, and ends the stream on the
// first drop, so a resumable token is driven by this small v5 client:
// after an abnormal drop it runs --token-command for a fresh single-use
// resume token, reconnects with ?resume-offset=<output bytes received>,
// and resends its stdin from the proxy's X-K8s-Ws-Proxy-Stdin-Offset out
// of a bounded ring of what it sent.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	streamproto "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"

	wsexec "github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/proxy"
)

// Defaults of the shell's resume flags.
const (
	// defaultStdinRetain covers what can be in flight between the shell and
	// the process when a connection drops: the socket buffers both ways
	// (a few MiB each on Linux) and the proxy's queue.
	defaultStdinRetain = 16 << 20
	// defaultResumeTimeout is the proxy's default --resume-window: trying
	// longer cannot succeed.
	defaultResumeTimeout = 60 * time.Second
	// defaultKeepalive: a connection silent for two periods (no frame, ping
	// or pong) is a drop, also when the path black-holes without a reset.
	defaultKeepalive    = 10 * time.Second
	tokenCommandTimeout = 30 * time.Second
	stdinChunk          = 32 << 10
	// maxResumeFrame is above the largest --max-frame-size the proxy takes.
	maxResumeFrame = 2 << 20
	// socketBuffer bounds the kernel buffers of a resumable connection.
	// Output in the receive buffer when a connection drops is lost and must
	// be replayed from the proxy's --resume-buffer (4 MiB by default);
	// stdin in the send buffer must be resent from --stdin-retain. Linux
	// autotunes both to tcp_rmem/tcp_wmem's maximum (often 6 to 32 MiB),
	// more than either holds. 512 KiB still moves 10 MB/s at 50 ms RTT.
	socketBuffer = 512 << 10
)

// Channel bytes of the v5 protocol the client uses.
const (
	chStdin  byte = 0
	chStdout byte = 1
	chStderr byte = 2
	chStatus byte = 3
	chResize byte = 4
	chClose  byte = streamproto.StreamClose
)

// stdinRing keeps the last len(buf) bytes of stdin handed to the stream,
// addressed by their offset from the start of the session.
type stdinRing struct {
	buf  []byte
	sent int64
}

func (r *stdinRing) add(p []byte) {
	for len(p) > 0 {
		n := copy(r.buf[int(r.sent%int64(len(r.buf))):], p)
		p = p[n:]
		r.sent += int64(n)
	}
}

// since is a copy of the bytes from offset on; false when the proxy claims
// more than was sent, or some of them are no longer kept.
func (r *stdinRing) since(off int64) ([]byte, bool) {
	if off < 0 || off > r.sent || r.sent-off > int64(len(r.buf)) {
		return nil, false
	}
	out := make([]byte, 0, r.sent-off)
	for off < r.sent {
		i := int(off % int64(len(r.buf)))
		end := min(len(r.buf), i+int(r.sent-off))
		out = append(out, r.buf[i:end]...)
		off += int64(end - i)
	}
	return out, true
}

type resumeOptions struct {
	execURL       string // the session's ws(s) URL, without resume-offset
	tls           *tls.Config
	sid           string
	tokenCommand  string
	retain        int
	resumeTimeout time.Duration
	keepalive     time.Duration // ping period; 0 sends no pings and waits forever
	stdin         io.Reader     // nil: the token grants no stdin
	stdout        io.Writer
	stderr        io.Writer // stderr frames (never with a tty)
	notices       io.Writer
	sizes         remotecommand.TerminalSizeQueue
	rawTTY        bool // the terminal is raw: a notice line needs \r\n
}

// resumingShell is one session across all its connections.
type resumingShell struct {
	o resumeOptions

	// wmu is the one writer of the current connection; it also guards the
	// stdin ring, so that what a resume resends and what the stdin pump
	// writes next follow each other without gap or overlap.
	wmu      sync.Mutex
	conn     *websocket.Conn // nil while reconnecting
	attached chan struct{}   // closed when conn is set; replaced on a detach
	ring     stdinRing
	stdinEOF bool
	size     *remotecommand.TerminalSize
	resends  sync.WaitGroup

	received int64 // stdout+stderr payload bytes (the reader's)

	// Totals for the notices and the tests.
	resumes     int
	resentStdin int64
}

// errRefused is a resume the proxy refused: it will not succeed later.
type errRefused struct {
	status  int
	message string
}

func (e *errRefused) Error() string {
	return fmt.Sprintf("the proxy refused to resume the session (HTTP %d): %s", e.status, e.message)
}

// runResumable runs the session until it ends, resuming after every drop.
func runResumable(ctx context.Context, o resumeOptions, token string) error {
	s := &resumingShell{o: o, attached: make(chan struct{}), ring: stdinRing{buf: make([]byte, o.retain)}}
	defer s.resends.Wait()
	c, _, err := s.dial(ctx, token, -1)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { s.closeCurrent() })
	defer stop()
	if err := s.attach(c, 0); err != nil {
		c.Close()
		return err
	}
	if o.stdin != nil {
		go s.pumpStdin(ctx)
	}
	if o.sizes != nil {
		go s.pumpSizes()
	}
	for {
		status, drop := s.read(c)
		if drop == nil {
			s.detach(c)
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			c.Close()
			return status
		}
		s.detach(c)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c, err = s.resume(ctx, drop); err != nil {
			return err
		}
	}
}

// read reads one connection until the session ends (drop nil, status the
// exit status) or the connection drops (drop says how). A close the proxy
// sends on purpose (taken over, revoked, a protocol error) is not a drop.
func (s *resumingShell) read(c *websocket.Conn) (status, drop error) {
	alive, stop := s.keepAlive(c)
	defer stop()
	for {
		mt, msg, err := c.ReadMessage()
		alive()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce) && ce.Code == proxy.CloseTakenOver:
				return fmt.Errorf("another connection resumed session %s (close %d: %s)", s.o.sid, ce.Code, ce.Text), nil
			case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure:
				return fmt.Errorf("the proxy closed the session without an exit status (close %d: %s)", ce.Code, ce.Text), nil
			}
			return nil, err
		}
		if mt != websocket.BinaryMessage || len(msg) == 0 {
			continue
		}
		var w io.Writer
		switch msg[0] {
		case chStdout:
			w = s.o.stdout
		case chStderr:
			w = s.o.stderr
		case chStatus:
			return wsexec.DecodeStatus(msg[1:]), nil
		default:
			continue
		}
		s.received += int64(len(msg) - 1)
		if w == nil {
			continue
		}
		if _, err := w.Write(msg[1:]); err != nil {
			return fmt.Errorf("writing the session's output: %w", err), nil
		}
	}
}

// keepAlive pings c every keepalive period until stop, and gives the
// reader a deadline of two periods that every frame, ping and pong moves
// on (alive). Without it a path that drops packets without a reset (a
// NAT's expired mapping, a dead link) would hold the shell until TCP gives
// up, minutes later, instead of resuming.
func (s *resumingShell) keepAlive(c *websocket.Conn) (alive, stop func()) {
	period := s.o.keepalive
	if period <= 0 {
		return func() {}, func() {}
	}
	alive = func() { _ = c.SetReadDeadline(time.Now().Add(2 * period)) }
	alive()
	pong := c.PingHandler()
	c.SetPingHandler(func(data string) error { alive(); return pong(data) })
	c.SetPongHandler(func(string) error { alive(); return nil })
	done := make(chan struct{})
	var pinger sync.WaitGroup
	pinger.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			// WriteControl may run beside the stdin writer (gorilla allows it).
			if c.WriteControl(websocket.PingMessage, nil, time.Now().Add(period)) != nil {
				return
			}
		}
	})
	return alive, func() { close(done); pinger.Wait() }
}

// attach makes c the current connection: the stdin the proxy has not
// taken (from stdinOffset) is resent first, then the stdin close and the
// terminal size if they were sent before, all before anything newer. The
// resend runs beside the reader (the proxy is replaying output meanwhile,
// and neither side may wait for the other); wmu stays held until it is
// done, and is unlocked by the resending goroutine.
func (s *resumingShell) attach(c *websocket.Conn, stdinOffset int64) error {
	s.wmu.Lock()
	resend, ok := s.ring.since(stdinOffset)
	if !ok {
		sent := s.ring.sent
		s.wmu.Unlock()
		if stdinOffset > sent {
			return fmt.Errorf("the proxy reports %d stdin bytes taken, more than the %d this shell sent", stdinOffset, sent)
		}
		return fmt.Errorf("the proxy has the first %d stdin bytes; the %d sent after them are more than --stdin-retain keeps (%d): resuming would lose input",
			stdinOffset, sent-stdinOffset, len(s.ring.buf))
	}
	s.conn = c
	s.resentStdin += int64(len(resend))
	eof, size := s.stdinEOF, s.size
	s.resends.Go(func() {
		defer s.wmu.Unlock()
		for len(resend) > 0 {
			n := min(len(resend), stdinChunk)
			if !s.writeLocked(c, append([]byte{chStdin}, resend[:n]...)) {
				return
			}
			resend = resend[n:]
		}
		if eof && !s.writeLocked(c, []byte{chClose, chStdin}) {
			return
		}
		if size != nil {
			s.writeLocked(c, resizeFrame(size))
		}
		close(s.attached)
	})
	return nil
}

// detach forgets c as the current connection (its socket is closed
// first, so that a writer blocked on it returns and frees wmu).
func (s *resumingShell) detach(c *websocket.Conn) {
	c.Close()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.dropLocked(c)
}

// dropLocked closes c and, if it is the current connection, makes the
// stdin pump wait for the next one. wmu is held.
func (s *resumingShell) dropLocked(c *websocket.Conn) {
	c.Close()
	if s.conn != c {
		return
	}
	s.conn = nil
	select {
	case <-s.attached:
		s.attached = make(chan struct{})
	default: // its resend failed: the next attach closes it
	}
}

func (s *resumingShell) closeCurrent() {
	s.wmu.Lock()
	c := s.conn
	s.wmu.Unlock()
	if c != nil {
		c.Close()
	}
}

// writeLocked writes one frame to c; a failure closes c, which the reader
// takes for a drop. wmu is held.
func (s *resumingShell) writeLocked(c *websocket.Conn, frame []byte) bool {
	if err := c.WriteMessage(websocket.BinaryMessage, frame); err != nil {
		s.dropLocked(c)
		return false
	}
	return true
}

// waitAttached waits until a connection is attached (not while a resume
// is reconnecting: stdin read then could outgrow the ring).
func (s *resumingShell) waitAttached(ctx context.Context) bool {
	s.wmu.Lock()
	ch := s.attached
	s.wmu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// pumpStdin sends local stdin. Every byte goes into the ring and counts
// as sent under wmu, written or not: a resume resends from the proxy's
// offset whatever it did not take.
func (s *resumingShell) pumpStdin(ctx context.Context) {
	buf := make([]byte, 1+stdinChunk)
	buf[0] = chStdin
	for s.waitAttached(ctx) {
		n, err := s.o.stdin.Read(buf[1:])
		s.wmu.Lock()
		if n > 0 {
			s.ring.add(buf[1 : 1+n])
			if s.conn != nil {
				s.writeLocked(s.conn, buf[:1+n])
			}
		}
		if err != nil {
			s.stdinEOF = true
			if s.conn != nil {
				s.writeLocked(s.conn, []byte{chClose, chStdin})
			}
			s.wmu.Unlock()
			return
		}
		s.wmu.Unlock()
	}
}

func (s *resumingShell) pumpSizes() {
	for {
		size := s.o.sizes.Next()
		if size == nil {
			return
		}
		s.wmu.Lock()
		s.size = size
		if s.conn != nil {
			s.writeLocked(s.conn, resizeFrame(size))
		}
		s.wmu.Unlock()
	}
}

func resizeFrame(size *remotecommand.TerminalSize) []byte {
	b, _ := json.Marshal(size)
	return append([]byte{chResize}, b...)
}

// resume reconnects after a drop until the proxy takes the resume, refuses
// it, or --resume-timeout passes. Each attempt gets a fresh token: they are
// single-use.
func (s *resumingShell) resume(ctx context.Context, drop error) (*websocket.Conn, error) {
	if s.o.tokenCommand == "" {
		return nil, fmt.Errorf("connection lost (%v); session %s can be resumed within the proxy's --resume-window, but only with --token-command", drop, s.o.sid)
	}
	start := time.Now()
	deadline := start.Add(s.o.resumeTimeout)
	wait := 100 * time.Millisecond
	for {
		token, err := runTokenCommand(ctx, s.o.tokenCommand, s.o.sid, s.received)
		if err != nil {
			return nil, err
		}
		c, hdr, err := s.dial(ctx, token, s.received)
		if err == nil {
			off, perr := strconv.ParseInt(hdr.Get(proxy.HeaderStdinOffset), 10, 64)
			if perr != nil {
				c.Close()
				return nil, fmt.Errorf("the proxy's resume answer has no valid %s header (%q): is it older than resume?", proxy.HeaderStdinOffset, hdr.Get(proxy.HeaderStdinOffset))
			}
			resentBefore := s.resentStdin
			if err := s.attach(c, off); err != nil {
				c.Close()
				return nil, err
			}
			s.resumes++
			s.notice("connection lost (%v); resumed session %s in %v: output from byte %d, %d stdin bytes resent",
				drop, s.o.sid, time.Since(start).Round(time.Millisecond), s.received, s.resentStdin-resentBefore)
			return c, nil
		}
		var refused *errRefused
		if errors.As(err, &refused) || ctx.Err() != nil {
			return nil, err
		}
		if time.Now().Add(wait).After(deadline) {
			return nil, fmt.Errorf("could not resume session %s within --resume-timeout %v: %w", s.o.sid, s.o.resumeTimeout, err)
		}
		// A retry backoff (the proxy or the network is not back yet).
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func (s *resumingShell) notice(format string, args ...any) {
	end := "\n"
	if s.o.rawTTY {
		end = "\r\n"
	}
	fmt.Fprintf(s.o.notices, "k8s-ws-proxy shell: "+format+end, args...)
}

// dial opens one connection of the session; offset -1 opens it, any
// other resumes from that output byte. An HTTP refusal that retrying
// cannot change is an *errRefused carrying the Status message.
func (s *resumingShell) dial(ctx context.Context, token string, offset int64) (*websocket.Conn, http.Header, error) {
	u, err := url.Parse(s.o.execURL)
	if err != nil {
		return nil, nil, err
	}
	if offset >= 0 {
		q := u.Query()
		q.Set(proxy.ResumeOffsetParam, strconv.FormatInt(offset, 10))
		u.RawQuery = q.Encode()
	}
	d := websocket.Dialer{
		Proxy: http.ProxyFromEnvironment, TLSClientConfig: s.o.tls, HandshakeTimeout: 30 * time.Second,
		Subprotocols:   []string{streamproto.StreamProtocolV5Name},
		NetDialContext: dialBounded,
	}
	c, resp, err := d.DialContext(ctx, u.String(), http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		if resp == nil {
			return nil, nil, err
		}
		msg := statusMessage(resp)
		switch {
		case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented:
			return nil, nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg)
		case offset < 0:
			return nil, nil, fmt.Errorf("the proxy refused the session (HTTP %d): %s", resp.StatusCode, msg)
		}
		return nil, nil, &errRefused{status: resp.StatusCode, message: msg}
	}
	if c.Subprotocol() != streamproto.StreamProtocolV5Name {
		c.Close()
		return nil, nil, fmt.Errorf("the proxy did not negotiate %s (got %q): a resumable session needs it", streamproto.StreamProtocolV5Name, c.Subprotocol())
	}
	c.SetReadLimit(maxResumeFrame)
	return c, resp.Header, nil
}

// dialBounded dials TCP with socketBuffer-sized kernel buffers.
func dialBounded(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 30 * time.Second}).DialContext(ctx, network, addr)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(socketBuffer)
		_ = tc.SetWriteBuffer(socketBuffer)
	}
	return c, err
}

// statusMessage is the message of a refusal's metav1.Status body.
func statusMessage(resp *http.Response) string {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var st metav1.Status
	if json.Unmarshal(body, &st) == nil && st.Message != "" {
		if st.Reason != "" {
			return fmt.Sprintf("%s (%s)", st.Message, st.Reason)
		}
		return st.Message
	}
	return strings.TrimSpace(string(body))
}

// runTokenCommand runs --token-command for a token and returns what it
// printed: for a resume of session sid (in K8S_WS_PROXY_RESUME), or with
// sid empty the session's first token. Its stdin is not the terminal's
// (which belongs to the session); its stderr is ours, for a prompt or an
// error.
func runTokenCommand(ctx context.Context, command, sid string, offset int64) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = os.Environ()
	if sid != "" {
		cmd.Env = append(cmd.Env, "K8S_WS_PROXY_RESUME="+sid, "K8S_WS_PROXY_RESUME_OFFSET="+strconv.FormatInt(offset, 10))
	}
	cmd.Stderr = os.Stderr
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("--token-command: %w", err)
	}
	tok := strings.TrimSpace(out.String())
	if tok == "" {
		return "", errors.New("--token-command printed no token")
	}
	return tok, nil
}
