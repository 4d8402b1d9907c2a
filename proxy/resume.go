package proxy

// Resume (docs/wire-protocol.md#resume): a session opened with a
// resumable token outlives an abnormal drop of its client connection for
// --resume-window. The exec keeps running; its output goes on into the
// session's resume buffer (the scrollback type of tap.go, bounded by
// --resume-buffer) with absolute offsets; a new connection with a resume
// token and ?resume-offset=N gets the output from byte N, then live
// output, and learns from a response header how much stdin the proxy has
// taken, so that it resends exactly the rest.
//
// One connection is attached at a time. Its read loop runs in the
// session's reader goroutine (readClient); the connection is swapped only
// there, between two read loops, under the write lock, so the code that
// reads ss.conn while a read loop runs (session.go) sees one connection.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// Defaults of Config.ResumeWindow and Config.ResumeBuffer.
const (
	DefaultResumeWindow = 60 * time.Second
	DefaultResumeBuffer = 4 << 20
	// MinResumeBuffer keeps a resume buffer larger than what one exec read
	// hands the proxy (client-go copies 32 KiB at a time).
	MinResumeBuffer = 64 << 10
)

// Wire names of resume (docs/wire-protocol.md#resume).
const (
	// ResumeOffsetParam is the query parameter of a resume: how many
	// stdout+stderr payload bytes the client has received.
	ResumeOffsetParam = "resume-offset"
	// HeaderStdinOffset, in the answer to a resume's upgrade, is how many
	// stdin payload bytes the proxy has taken from the session's earlier
	// connections: the client resends its stdin from that byte.
	HeaderStdinOffset = "X-K8s-Ws-Proxy-Stdin-Offset"
	// HeaderOutputOffset is the session's output offset when the resume
	// was admitted (the replay ends there, live output follows).
	HeaderOutputOffset = "X-K8s-Ws-Proxy-Output-Offset"
	// CloseTakenOver is the close code of a connection replaced by a
	// resume (an application code: RFC 6455 reserves 4000-4999).
	CloseTakenOver = 4001
)

// takeOverWait bounds how long a resume waits for the connection it
// replaces to stop reading (its socket is closed first).
const takeOverWait = 5 * time.Second

// maxEndedResumables bounds the sids of ended resumable sessions kept to
// say why a resume of one is refused.
const maxEndedResumables = 1024

// resumeWindow and resumeBuffer are the configured values (0 or less:
// resume is off).
func resumeWindow(cfg *Config) time.Duration {
	if cfg.ResumeWindow == 0 {
		return DefaultResumeWindow
	}
	return cfg.ResumeWindow
}

func resumeBuffer(cfg *Config) int {
	if cfg.ResumeBuffer <= 0 {
		return DefaultResumeBuffer
	}
	return max(cfg.ResumeBuffer, MinResumeBuffer)
}

// boundSendBuffer caps the kernel send buffer of a resumable session's
// connection to an eighth of its resume buffer (Linux doubles the value
// and autotunes an uncapped one up to 4 MiB, the default resume buffer):
// output in it counts as sent but is lost with the connection, so a resume
// must find it in the resume buffer, or be refused with 416.
func boundSendBuffer(c net.Conn, resumeBuffer int) {
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			_ = v.SetWriteBuffer(max(resumeBuffer/8, 32<<10))
			return
		case *batchConn:
			c = v.Conn
		case *trackedConn:
			c = v.Conn
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = v.NetConn()
		default:
			return
		}
	}
}

// ParseResumeOffset reads the resume-offset query values: exactly one, a
// decimal count without sign or spaces that fits an int64.
func ParseResumeOffset(vs []string) (int64, error) {
	if len(vs) != 1 {
		return 0, fmt.Errorf("%s must be given exactly once", ResumeOffsetParam)
	}
	v := vs[0]
	if v == "" || len(v) > 19 {
		return 0, fmt.Errorf("%s must be a byte count of 1 to 19 decimal digits", ResumeOffsetParam)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, fmt.Errorf("%s must be a byte count (decimal digits only)", ResumeOffsetParam)
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s is out of range", ResumeOffsetParam)
	}
	return n, nil
}

// checkResumeRequest holds the resume claims and the resume-offset
// parameter together, before anything is looked up.
func (s *Server) checkResumeRequest(c *hmac.Claims, q url.Values) *rejection {
	_, hasOffset := q[ResumeOffsetParam]
	switch {
	case c.Resume == "" && hasOffset:
		return rejectResume(http.StatusBadRequest, "resume_offset_without_resume", "%s is only for a token with a resume claim", ResumeOffsetParam)
	case c.Resume == "":
		return nil
	case !hasOffset:
		return rejectResume(http.StatusBadRequest, "resume_offset_missing", "a resume needs ?%s=N: the count of output bytes the client received", ResumeOffsetParam)
	}
	if _, err := ParseResumeOffset(q[ResumeOffsetParam]); err != nil {
		return rejectResume(http.StatusBadRequest, "resume_bad_offset", "%v", err)
	}
	return nil
}

// rejectResume is reject for the refusals of this file (the admission
// table covers admission.go's; resume_test.go covers these).
func rejectResume(status int, reason, format string, args ...any) *rejection {
	return reject(status, reason, format, args...)
}

// resumeState is a resumable session's buffer and connection state.
type resumeState struct {
	window time.Duration
	limit  int

	mu       sync.Mutex
	back     scrollback // the last limit bytes of output, channel by channel
	added    int64      // output bytes taken into the stream since the start
	attached bool       // a client connection is attached
	claimed  bool       // a resume is between its checks and its attach
	ended    bool       // no connection attaches any more
	idle     bool       // no read loop runs (between a detach and the next attach)
	cur      *websocket.Conn
	pending  *attachment
	changed  chan struct{} // closed (and replaced) when the above change

	connCtx    context.Context // the attached connection's: a stdin push waits on it
	connCancel context.CancelFunc

	detachedAt   time.Time
	detachReason string
	timer        *time.Timer // the window of the current detach
	ping         *time.Timer

	resumes  int
	replayed int64
	final    *finalFrames // what the session ended with, once it has
}

// attachment is a resume's upgraded connection waiting for the reader.
type attachment struct {
	conn     *websocket.Conn
	out      *batchConn
	offset   int64
	stdin    int64
	tookOver bool
	remote   string
	admitted time.Time
}

// resumeStateFor is the resume state of a new session: nil unless its
// token is resumable and resume is on.
func (s *Server) resumeStateFor(c *hmac.Claims) *resumeState {
	if !c.Resumable || c.Resume != "" || c.Mode != "" || resumeWindow(&s.cfg) < 0 {
		return nil
	}
	return &resumeState{window: resumeWindow(&s.cfg), limit: resumeBuffer(&s.cfg), changed: make(chan struct{})}
}

func (r *resumeState) signalLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// waitLocked gives up r.mu until the next signalLocked or done, and takes
// it again.
func (r *resumeState) waitLocked(done <-chan struct{}) {
	ch := r.changed
	r.mu.Unlock()
	select {
	case <-ch:
	case <-done:
	}
	r.mu.Lock()
}

// held is the range of output offsets the buffer holds.
func (r *resumeState) heldLocked() (from, to int64) {
	return r.added - int64(r.back.bytes), r.added
}

// roomLocked says whether n more bytes of output may go into the buffer
// now. While no client is attached (or a resume is on its way) nothing
// held may be dropped: the process waits for its output to be taken, as
// it would behind a client that does not read.
func (r *resumeState) roomLocked(n int) bool {
	if r.attached && !r.claimed {
		return true
	}
	return r.back.bytes == 0 || r.back.bytes+n <= r.limit
}

// liveOut is the attached connection's batchConn, for the code that
// bounds writes without the write lock (bound).
func (ss *session) liveOut() *batchConn {
	if r := ss.res; r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	return ss.out
}

// pushCtx is what a stdin push waits on: the session, or for a resumable
// session its attached connection, so that a drop frees the read loop
// (the frame it held was not taken, and is resent by the client).
func (ss *session) pushCtx() context.Context {
	if r := ss.res; r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.connCtx
	}
	return ss.ctx
}

// keepStdin says whether a read loop that ends leaves stdin open: its
// connection was detached, and the next one continues the stream.
func (ss *session) keepStdin() bool {
	r := ss.res
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.attached && !r.ended
}

// sendResumable is sendOutput for a resumable session: every byte goes
// into the resume buffer first and counts as sent; the attached client,
// if any, is written to after, and a failed write detaches it instead of
// ending the session.
func (ss *session) sendResumable(channel byte, p []byte, whole, process bool) (int, error) {
	r := ss.res
	for {
		ss.wmu.Lock()
		if ss.closed || ss.gone.Load() {
			ss.wmu.Unlock()
			return 0, errSessionClosed
		}
		r.mu.Lock()
		ok, ch := r.roomLocked(len(p)), r.changed
		r.mu.Unlock()
		if ok {
			break
		}
		ss.wmu.Unlock()
		if ss.endReason.Load() != nil {
			return 0, errSessionClosed // ending: a notice nobody can read is not waited for
		}
		select {
		case <-ch:
		case <-ss.ctx.Done():
			return 0, errSessionClosed
		}
	}
	defer ss.wmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	recorded, err := ss.recordFirst(channel, p, process)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	r.back.add(channel, p, r.limit, false)
	r.added += int64(len(p))
	attached := r.attached
	r.mu.Unlock()
	ss.passOn(recorded, channel, p)
	ss.addOutput(len(p))
	if attached {
		_, _ = ss.writeFramesLocked(channel, p, whole) // a failure detaches (writeFailed)
	}
	return len(p), nil
}

// dropReason says whether a read error is an abnormal drop that a
// resumable session survives, and names it. A close frame, an oversized
// message or a protocol error end the session as always; so does a bare
// EOF on the older protocols, which is how guacd leaves.
func dropReason(p wireProtocol, err error) (string, bool) {
	var ce *websocket.CloseError
	eof := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	if errors.As(err, &ce) {
		if ce.Code != websocket.CloseAbnormalClosure {
			return "", false
		}
		eof = true
	}
	switch {
	case errors.Is(err, websocket.ErrReadLimit), isProtocolError(err):
		return "", false
	case isTimeout(err):
		return "ping_timeout", true
	case errors.Is(err, syscall.ECONNRESET):
		return "connection_reset", true
	case eof && p.name != ProtocolV5:
		return "", false
	case eof:
		return "client_gone", true
	}
	return "client_gone", true
}

// resumeOnDrop is clientEnded's hook: it reports true when the read error
// detached a resumable session's connection (or the connection was
// already detached or taken over), which leaves the session running.
func (ss *session) resumeOnDrop(err error) bool {
	r := ss.lockResumable()
	if r == nil {
		return false
	}
	if !r.attached || r.cur != ss.conn {
		r.mu.Unlock()
		return true
	}
	reason, ok := dropReason(ss.proto, err)
	if !ok {
		// Ending: no connection attaches any more (the client's close
		// reply after the final status lands here too).
		r.ended = true
		r.signalLocked()
		r.mu.Unlock()
		return false
	}
	r.detachLocked(ss, reason)
	r.mu.Unlock()
	ss.conn.Close()
	return true
}

// resumeOnWriteFailure is writeFailed's hook (the write lock is held).
func (ss *session) resumeOnWriteFailure() bool {
	r := ss.lockResumable()
	if r == nil {
		return false
	}
	if r.attached && r.cur == ss.conn {
		r.detachLocked(ss, "client_write_failed")
	}
	r.mu.Unlock()
	ss.conn.Close()
	return true
}

// lockResumable returns the resume state locked, or nil (nothing locked)
// when the session is not resumable or its resumable life has ended.
func (ss *session) lockResumable() *resumeState {
	r := ss.res
	if r == nil {
		return nil
	}
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return nil
	}
	return r
}

// connLost detaches conn if it is still the attached one (a failed ping).
func (ss *session) connLost(conn *websocket.Conn, reason string) {
	r := ss.res
	r.mu.Lock()
	if r.ended || !r.attached || r.cur != conn {
		r.mu.Unlock()
		return
	}
	r.detachLocked(ss, reason)
	r.mu.Unlock()
	conn.Close()
}

// detachLocked marks the attached connection gone and starts the window
// (unless a resume is already on its way: it takes over).
func (r *resumeState) detachLocked(ss *session, reason string) {
	r.attached = false
	r.detachedAt = time.Now()
	r.detachReason = reason
	if r.connCancel != nil {
		r.connCancel()
	}
	if r.ping != nil {
		r.ping.Stop()
	}
	if !r.claimed {
		r.armWindowLocked(ss, r.window)
	}
	r.signalLocked()
	from, to := r.heldLocked()
	ss.logger().Info("session detached", "event", "detach", "sub", ss.claims.Subject, "reason", reason,
		"output_offset", to, "buffered_from", from, "window", r.window.String())
}

func (r *resumeState) armWindowLocked(ss *session, d time.Duration) {
	if r.timer != nil {
		r.timer.Stop()
	}
	r.timer = time.AfterFunc(max(d, 0), func() { ss.resumeExpired() })
}

// resumeExpired ends a session no client resumed within the window.
func (ss *session) resumeExpired() {
	r := ss.res
	r.mu.Lock()
	if r.attached || r.ended || r.claimed {
		r.mu.Unlock()
		return
	}
	r.ended = true
	r.signalLocked()
	since := r.detachedAt
	r.mu.Unlock()
	if ss.setEndReason("resume_window_expired") {
		ss.logger().Info("resume window expired", "event", "resume_expired", "sub", ss.claims.Subject,
			"detached_for", time.Since(since).String(), "window", r.window.String())
	}
	ss.gone.Store(true)
	ss.cancel()
}

// readClient runs the read loop of every connection the session has: the
// first, then each one a resume attaches, until the session ends.
func (ss *session) readClient() {
	r := ss.res
	if r == nil {
		ss.readLoop()
		return
	}
	r.mu.Lock()
	r.cur, r.attached = ss.conn, true
	r.connCtx, r.connCancel = context.WithCancel(ss.ctx)
	r.mu.Unlock()
	for {
		ss.startPings(ss.conn)
		ss.readLoop()
		if !ss.awaitAttach() {
			return
		}
	}
}

// startPings is startTimers' ping for one connection of a resumable
// session: a failed ping detaches that connection only.
func (ss *session) startPings(conn *websocket.Conn) {
	cfg := ss.cfg
	if cfg.PingInterval <= 0 {
		return
	}
	ss.readExtended.Store(0)
	ping := ss.armPings(conn, func() { ss.connLost(conn, "client_gone") })
	ss.res.mu.Lock()
	ss.res.ping = ping
	ss.res.mu.Unlock()
}

// awaitAttach waits, between two read loops, for a resume to attach a
// connection, and attaches it: the replay from its offset is written
// before any newer output (the write lock is held throughout). False: the
// session is over.
func (ss *session) awaitAttach() bool {
	r := ss.res
	r.mu.Lock()
	if r.ping != nil {
		r.ping.Stop()
	}
	r.idle = true
	r.signalLocked()
	for r.pending == nil && !r.ended && ss.ctx.Err() == nil {
		r.waitLocked(ss.ctx.Done())
	}
	a := r.pending
	r.pending = nil
	if r.ended || ss.ctx.Err() != nil {
		r.ended = true
		r.signalLocked()
		r.mu.Unlock()
		if a != nil {
			refuseAttached(a.conn, "the session ended before the resume attached")
		}
		return false
	}
	r.mu.Unlock()

	ss.wmu.Lock()
	r.mu.Lock()
	from, to := r.heldLocked()
	chunks := r.back.snapshot()
	ss.conn, ss.out = a.conn, a.out
	ss.badClose.Store(false)
	// closed was the old connection's (its close handshake with a takeover
	// close); the session itself is not ending, or it would have ended.
	ss.closed = false
	r.cur, r.attached, r.claimed, r.idle = a.conn, true, false, false
	r.connCtx, r.connCancel = context.WithCancel(ss.ctx)
	if r.timer != nil {
		r.timer.Stop()
	}
	r.resumes++
	detached := time.Since(r.detachedAt)
	r.signalLocked()
	r.mu.Unlock()
	ss.conn.SetReadLimit(ss.cfg.MaxMessageSize)
	ss.conn.SetCloseHandler(ss.onClientClose)
	ss.out.onCloseFrame = func(n int) { ss.badClose.Store(n == 1) }
	// The replay: chunks hold [from, to); the client has [0, offset).
	replayed, off := int64(0), from
	for _, c := range chunks {
		end := off + int64(len(c.b))
		if end > a.offset {
			b := c.b[max(a.offset-off, 0):]
			if _, err := ss.writeFramesLocked(c.channel, b, !ss.claims.TTY); err != nil {
				break
			}
			replayed += int64(len(b))
		}
		off = end
	}
	ss.wmu.Unlock()
	r.mu.Lock()
	r.replayed += replayed
	r.mu.Unlock()
	ss.touch()
	ss.logger().Info("session resumed", "event", "resume", "sub", ss.claims.Subject, "offset", a.offset,
		"replayed_bytes", replayed, "output_offset", to, "stdin_offset", a.stdin, "took_over", a.tookOver,
		"detached_for", detached.String(), "attach_latency", time.Since(a.admitted).String(), "remote", a.remote)
	return true
}

// refuseAttached ends an upgraded resume connection that cannot attach.
func refuseAttached(conn *websocket.Conn, why string) {
	deadline := time.Now().Add(time.Second)
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseTryAgainLater, why), deadline)
	conn.Close()
}

// waitFor waits until cond holds (r.mu is held while it is checked) or
// the session's context ends.
func (r *resumeState) waitFor(ss *session, cond func() bool) {
	r.mu.Lock()
	for !cond() && ss.ctx.Err() == nil {
		r.waitLocked(ss.ctx.Done())
	}
	r.mu.Unlock()
}

// finishResumable is finish for every session. Once the exec has ended, a
// resumable session whose client is detached (or being resumed) waits for
// the resume, within the window, so that the client still gets the end of
// the output and the exit status. The end counts as delivered only when
// the client answers the close frame: a connection that drops before
// (the status was written, not read) detaches like any other, and the
// next resume gets the tail and the status again.
func (ss *session) finishResumable(err error) int {
	r := ss.res
	if r == nil {
		return ss.finish(err)
	}
	waitAttached := func() { r.waitFor(ss, func() bool { return r.ended || (r.attached && !r.claimed) }) }
	waitAttached()
	exitCode := ss.finish(err)
	for {
		r.waitFor(ss, func() bool { return r.ended || !r.attached || r.claimed })
		r.mu.Lock()
		done, final := r.ended || ss.ctx.Err() != nil, r.final
		r.mu.Unlock()
		if done || final == nil {
			break
		}
		waitAttached()
		if r.isEnded() || ss.ctx.Err() != nil {
			break
		}
		ss.sendStatusAndClose(final.st, final.code, final.text)
	}
	r.mu.Lock()
	r.ended = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.signalLocked()
	r.mu.Unlock()
	return exitCode
}

func (r *resumeState) isEnded() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ended
}

// finalFrames is the status and close a resumable session ended with,
// sent again to a resume that comes before the client acknowledged them.
type finalFrames struct {
	st   *metav1.Status
	code int
	text string
}

// keepFinal is sendStatusAndClose's hook.
func (ss *session) keepFinal(st *metav1.Status, code int, text string) {
	if r := ss.res; r != nil {
		r.mu.Lock()
		r.final = &finalFrames{st: st, code: code, text: text}
		r.mu.Unlock()
	}
}

// resumeCloseAttrs are the closed line's resume fields.
func (ss *session) resumeCloseAttrs() []any {
	r := ss.res
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return []any{"resumable", true, "resumes", r.resumes, "replayed_bytes", r.replayed}
}

// ResumeInfo is a resumable session's state in GET /sessions.
type ResumeInfo struct {
	// Attached: a client connection is attached now.
	Attached bool `json:"attached"`
	// DetachedSince is when the last connection dropped, while none is
	// attached; the session ends at DetachedSince + window.
	DetachedSince *time.Time `json:"detached_since,omitempty"`
	// DetachReason is why it dropped (client_gone, connection_reset,
	// ping_timeout, client_write_failed, taken_over).
	DetachReason string `json:"detach_reason,omitempty"`
	// OutputOffset is the output bytes sent so far; BufferedBytes of them,
	// the last ones, can be replayed.
	OutputOffset  int64 `json:"output_offset"`
	BufferedBytes int   `json:"buffered_bytes"`
	Resumes       int   `json:"resumes"`
}

func (ss *session) resumeInfo() *ResumeInfo {
	r := ss.res
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	info := &ResumeInfo{Attached: r.attached, OutputOffset: r.added, BufferedBytes: r.back.bytes, Resumes: r.resumes}
	if !r.attached && !r.detachedAt.IsZero() {
		t := r.detachedAt.UTC()
		info.DetachedSince, info.DetachReason = &t, r.detachReason
	}
	return info
}

// endedResumable is why a resumable session that is gone ended.
type endedResumable struct {
	at     time.Time
	reason string
}

// forgetSessionLocked keeps the end of a resumable session, so that a
// late resume is told why it cannot be; the caller holds s.mu.
func (s *Server) forgetSessionLocked(ss *session) {
	if ss.res == nil || ss.endReason.Load() == nil {
		return
	}
	if s.endedResumables == nil {
		s.endedResumables = map[string]endedResumable{}
	}
	if len(s.endedResumables) >= maxEndedResumables {
		oldest := ""
		for sid, e := range s.endedResumables {
			if oldest == "" || e.at.Before(s.endedResumables[oldest].at) {
				oldest = sid
			}
		}
		delete(s.endedResumables, oldest)
	}
	s.endedResumables[ss.id] = endedResumable{at: time.Now(), reason: *ss.endReason.Load()}
}

// serveResume attaches a resume's connection to the session its token
// names. Every check of admit has passed; the rest happens here, before
// the upgrade: the session, its owner and target, the offset, the token.
func (s *Server) serveResume(w http.ResponseWriter, r *http.Request, g *grant) {
	c := g.claims
	offset, _ := ParseResumeOffset(r.URL.Query()[ResumeOffsetParam]) // checked by admit
	refuse := func(rej *rejection) {
		rej.sid = shorten(c.Resume, 64)
		s.refuse(g.ctx, w, r, rej)
	}
	ss, rej := s.findResumable(g)
	if rej != nil {
		refuse(rej)
		return
	}
	res := ss.res
	if rej := res.claim(offset, ss); rej != nil {
		refuse(rej)
		return
	}
	if err := s.cfg.Verifier.Consume(c); err != nil {
		res.release(ss)
		refuse(tokenRejection(err))
		return
	}
	admitted := time.Now()
	stdin, tookOver, ok := ss.takeOver()
	if !ok {
		res.release(ss)
		refuse(reject(http.StatusGone, "resume_session_ended", "session %q ended while the resume was admitted", shorten(c.Resume, 64)))
		return
	}
	res.mu.Lock()
	_, outputTo := res.heldLocked()
	res.mu.Unlock()
	hdr := http.Header{HeaderStdinOffset: {strconv.FormatInt(stdin, 10)}, HeaderOutputOffset: {strconv.FormatInt(outputTo, 10)}}
	if ss.proto.name != "" {
		hdr.Set("Sec-Websocket-Protocol", ss.proto.name)
	}
	conn, out, err := s.upgradeBatching(w, r, hdr)
	if err != nil {
		res.release(ss)
		s.log.Warn("session rejected", "sid", ss.id, "event", "rejected", "reason", "upgrade_failed", "detail", err.Error(), "remote", r.RemoteAddr)
		return
	}
	boundSendBuffer(out, res.limit)
	a := &attachment{conn: conn, out: out, offset: offset, stdin: stdin, tookOver: tookOver, remote: r.RemoteAddr, admitted: admitted}
	res.mu.Lock()
	if res.ended {
		res.claimed = false
		res.signalLocked()
		res.mu.Unlock()
		refuseAttached(conn, "the session ended before the resume attached")
		return
	}
	res.pending = a
	res.signalLocked()
	res.mu.Unlock()
}

// findResumable is the live session a resume token names, checked against
// the token, under the registry lock the revocations are applied under.
func (s *Server) findResumable(g *grant) (*session, *rejection) {
	c := g.claims
	sid := shorten(c.Resume, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	if rv := s.revocations.Load(); rv != nil && rv.match(c) {
		return nil, rejectResume(http.StatusForbidden, "revoked", "the token's subject or id is revoked")
	}
	var hits []*session
	for ss := range s.sessions {
		if ss.id == c.Resume && ss.upgraded.Load() && ss.observing == nil {
			hits = append(hits, ss)
		}
	}
	switch {
	case len(hits) == 0:
		if e, ok := s.endedResumables[c.Resume]; ok {
			if e.reason == "resume_window_expired" {
				return nil, rejectResume(http.StatusGone, "resume_window_expired",
					"session %q ended: no client resumed it within the resume window (--resume-window %v)", sid, resumeWindow(&s.cfg))
			}
			return nil, rejectResume(http.StatusGone, "resume_session_ended", "session %q has ended (%s)", sid, e.reason)
		}
		return nil, rejectResume(http.StatusNotFound, "resume_unknown_session", "no session %q on this proxy to resume", sid)
	case len(hits) > 1:
		return nil, rejectResume(http.StatusConflict, "resume_ambiguous_session", "%d live sessions share sid %q; resume needs a unique sid", len(hits), sid)
	}
	ss := hits[0]
	switch {
	case ss.res == nil:
		return nil, rejectResume(http.StatusConflict, "resume_not_resumable", "session %q was not opened with a resumable token", sid)
	case ss.claims.Subject != c.Subject:
		return nil, rejectResume(http.StatusForbidden, "resume_subject_mismatch", "the resume token's sub is not the sub of session %q", sid)
	case !sameTarget(c, ss.claims) || c.Stdin != ss.claims.Stdin:
		return nil, rejectResume(http.StatusForbidden, "resume_target_mismatch",
			"the resume token's namespace, pod, container, command, tty and stdin must be those of session %q", sid)
	case g.protocol != ss.proto.name:
		return nil, rejectResume(http.StatusBadRequest, "resume_protocol_mismatch",
			"session %q speaks %q: a resume must negotiate the same subprotocol", sid, ss.proto.name)
	case ss.endReason.Load() != nil && ss.ctx.Err() != nil:
		// An exec that exited still takes a resume until its client has
		// acknowledged the end (finishResumable; claim checks that).
		return nil, rejectResume(http.StatusGone, "resume_session_ended", "session %q is ending (%s)", sid, *ss.endReason.Load())
	}
	return ss, nil
}

// claim checks the offset against what the buffer holds and reserves the
// session for this resume: from now until the attach nothing held is
// dropped, so the offset stays valid.
func (r *resumeState) claim(offset int64, ss *session) *rejection {
	r.mu.Lock()
	defer r.mu.Unlock()
	from, to := r.heldLocked()
	switch {
	case r.ended:
		return rejectResume(http.StatusGone, "resume_session_ended", "session %q has ended", shorten(ss.id, 64))
	case r.claimed:
		return rejectResume(http.StatusConflict, "resume_in_progress", "another resume of session %q is in progress", shorten(ss.id, 64))
	case offset > to:
		return rejectResume(http.StatusRequestedRangeNotSatisfiable, "resume_offset_beyond_sent",
			"resume offset %d is beyond the %d output bytes the session has sent", offset, to)
	case offset < from:
		return rejectResume(http.StatusRequestedRangeNotSatisfiable, "resume_offset_not_buffered",
			"output byte %d is no longer buffered: the session holds bytes %d to %d (--resume-buffer); resuming would skip output", offset, from, to)
	}
	r.claimed = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.signalLocked()
	return nil
}

// release undoes a claim whose resume did not attach.
func (r *resumeState) release(ss *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.claimed {
		return
	}
	r.claimed = false
	if !r.attached && !r.ended {
		r.armWindowLocked(ss, r.window-time.Since(r.detachedAt))
	}
	r.signalLocked()
}

// takeOver detaches the attached connection, if any (close CloseTakenOver,
// then the socket is closed), and waits for its read loop to stop, so
// that the stdin offset it returns is final. ok is false when the session
// ended meanwhile.
func (ss *session) takeOver() (stdin int64, tookOver, ok bool) {
	r := ss.res
	r.mu.Lock()
	if r.attached {
		old := r.cur
		r.detachLocked(ss, "taken_over")
		r.mu.Unlock()
		tookOver = true
		_ = old.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(CloseTakenOver, "session resumed by another connection"), time.Now().Add(time.Second))
		old.Close()
		r.mu.Lock()
	}
	deadline := time.NewTimer(takeOverWait)
	defer deadline.Stop()
	for !r.idle && !r.ended {
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return 0, tookOver, false
		case <-ss.ctx.Done():
		}
		r.mu.Lock()
		if ss.ctx.Err() != nil {
			break
		}
	}
	ended := r.ended || ss.ctx.Err() != nil
	r.mu.Unlock()
	if ended {
		return 0, tookOver, false
	}
	if ss.stdin != nil {
		stdin = ss.stdin.pushedBytes()
	}
	return stdin, tookOver, true
}
