package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	streamproto "k8s.io/apimachinery/pkg/util/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// serveSession reads admit → register → upgrade → bridge: every refusal
// (admission.go) happens before the upgrade, and the whole admission holds
// a place of MaxAdmissions (enterAdmission) until the upgrade.
func (s *Server) serveSession(w http.ResponseWriter, r *http.Request, attach bool) {
	start := time.Now()
	ctx, span := s.tel.tracer.Start(r.Context(), "k8s_ws_proxy.session", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	w, leave, rej := s.enterAdmission(w, r)
	defer leave()
	if rej != nil {
		s.refuse(ctx, w, r, rej)
		return
	}
	g, rej := s.admit(ctx, r, attach)
	if rej != nil {
		s.refuse(ctx, w, r, clientGone(r, rej))
		return
	}
	if g.claims.Mode == hmac.ModeObserve {
		s.serveObserver(w, r, g)
		return
	}
	if g.claims.Resume != "" {
		s.serveResume(w, r, g) // resume.go
		return
	}
	sess := s.newSession(g, start)
	sess.release = func() { s.releaseSlot(sess) }
	defer sess.cancel()
	if rej := s.register(sess); rej != nil {
		s.refuse(ctx, w, r, rej)
		return
	}
	defer s.unregister(sess)
	if !s.upgrade(w, r, sess) {
		return
	}
	s.tel.active.Add(sess.ctx, 1)
	defer s.tel.active.Add(sess.ctx, -1)
	sess.run()
}

// newSession builds the session of an admitted request. It holds one
// context: the request's values (span, identity), not its cancellation.
func (s *Server) newSession(g *grant, start time.Time) *session {
	sess := &session{
		cfg:    &s.cfg,
		log:    s.log.With("sid", g.sid),
		tel:    s.tel,
		recTel: s.recTel,
		id:     g.sid,
		claims: g.claims,
		target: g.target,
		proto:  protocolFor(g.protocol),
		start:  start,
		stderr: g.target.Stderr,
	}
	sess.payload = sess.proto.maxPayload(s.cfg.MaxFrameSize)
	sess.res = s.resumeStateFor(g.claims)
	sess.ctx, sess.cancel = context.WithCancel(context.WithoutCancel(g.ctx))
	return sess
}

// upgrade answers the WebSocket handshake with the negotiated subprotocol
// and hands the connection to sess.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, sess *session) bool {
	var hdr http.Header
	if sess.proto.name != "" {
		hdr = http.Header{"Sec-Websocket-Protocol": {sess.proto.name}}
	}
	conn, out, err := s.upgradeBatching(w, r, hdr)
	if err != nil {
		// The upgrader has already answered the client.
		sess.discardRecording()
		s.log.Warn("session rejected", "sid", sess.id, "event", "rejected", "reason", "upgrade_failed", "detail", err.Error(), "remote", r.RemoteAddr)
		return false
	}
	if sess.res != nil {
		boundSendBuffer(out, sess.res.limit)
	}
	sess.wmu.Lock()
	sess.conn, sess.out = conn, out
	sess.wmu.Unlock()
	sess.upgraded.Store(true)
	return true
}

var errSessionClosed = errors.New("session closed")

// errRecordingFailed stops the process's output once a required recording
// has failed: the session is being ended.
var errRecordingFailed = errors.New("session recording failed")

// endingGrace bounds what is left of a session the proxy ends (drain,
// limits): the last frames must be written and the client's close reply
// read within it, or the connection is closed anyway. The drain therefore
// ends at most this long after --shutdown-grace, whatever clients do.
const endingGrace = 2 * time.Second

// closeNone is logged as the close code when no close frame reached the
// client (RFC 6455's code for a connection that ended without one).
const closeNone = websocket.CloseAbnormalClosure

// session is one bridged WebSocket connection.
type session struct {
	cfg     *Config // the server's, read only
	log     *slog.Logger
	tel     *telemetry
	recTel  *recordingInstruments
	id      string
	claims  *hmac.Claims
	target  exec.Target
	proto   wireProtocol
	start   time.Time
	stderr  bool
	payload int // payload bytes per outbound frame
	conn    *websocket.Conn
	out     *batchConn // under conn

	ctx      context.Context
	cancel   context.CancelFunc
	upgraded atomic.Bool // conn and out are set

	wmu    sync.Mutex // one writer at a time on the connection
	wbuf   []byte
	closed bool // a close frame was sent; no more frames

	gone      atomic.Bool  // the client cannot be written to any more
	closeCode atomic.Int32 // the close frame's code the client was sent
	closeBy   atomic.Int64 // unix nanoseconds: the connection closes by then (0: no bound yet)

	stdin     *stdinQueue
	sizes     *sizeQueue
	bytesIn   atomic.Int64
	bytesOut  atomic.Int64
	endReason atomic.Pointer[string]
	warned    sync.Map // warning kinds already logged for this session
	badClose  atomic.Bool

	lastActivity atomic.Int64 // unix nanoseconds of the last data frame either way
	readExtended atomic.Int64 // unix nanoseconds of the last read deadline extension

	rec     *sessionRecording // nil when not recorded
	release func()            // gives the session's slot back (Server.releaseSlot)

	fan       fanoutField  // output to observers and scrollback (tap.go)
	res       *resumeState // nil unless resumable (resume.go)
	observing *session     // for an observer's connection: the session it watches (observe.go)
}

func (ss *session) logger() *slog.Logger {
	return ss.log
}

// setEndReason records why the session ended; the first reason wins.
func (ss *session) setEndReason(r string) bool { return ss.endReason.CompareAndSwap(nil, &r) }

func (ss *session) run() {
	c := ss.claims
	ss.conn.SetReadLimit(ss.cfg.MaxMessageSize)
	ss.conn.SetCloseHandler(ss.onClientClose)
	ss.out.onCloseFrame = func(n int) { ss.badClose.Store(n == 1) }
	ss.touch()
	stopTimers := ss.startTimers()
	defer stopTimers()

	target := ss.target
	// Without a tty, clients (python-kubernetes) decode each frame on its
	// own: frames carry whole UTF-8 characters.
	stdout := &frameWriter{ss: ss, channel: chanStdout, whole: !c.TTY}
	streams := exec.Streams{Stdout: stdout}
	var stderr *frameWriter
	if ss.stderr {
		stderr = &frameWriter{ss: ss, channel: chanStderr, whole: !c.TTY}
		streams.Stderr = stderr
	}
	if c.Stdin {
		ss.stdin = newStdinQueue(int(ss.cfg.MaxMessageSize), func(n int) {
			ss.bytesIn.Add(int64(n))
			ss.touch()
		})
		streams.Stdin = ss.stdin
	}
	if c.TTY {
		ss.sizes = newSizeQueue()
		streams.Sizes = ss.sizes
	}
	ss.logger().Info("session opened", "event", "open", "sub", c.Subject, "namespace", c.Namespace,
		"pod", c.Pod, "container", c.Container, "command", c.Command, "tty", c.TTY, "stdin", c.Stdin,
		"protocol", ss.proto.name, "remote", ss.conn.RemoteAddr().String())

	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		ss.readClient() // readLoop, once per connection a resume attaches
	}()

	_, dialSpan := ss.tel.tracer.Start(ss.ctx, "k8s_ws_proxy.exec.dial")
	var dialed atomic.Bool
	execCtx := exec.WithDialObserver(ss.ctx, func(d time.Duration) {
		if !dialed.Swap(true) {
			ss.tel.execDial.Record(ss.ctx, d.Seconds())
			dialSpan.End()
		}
	})
	res, err := ss.stream(execCtx, target, streams) // framerelay.go
	if !dialed.Load() {
		dialSpan.SetStatus(codes.Error, "exec dial failed")
		dialSpan.End()
	}

	// Unblock a reader stuck handing stdin to an exec that is gone.
	if ss.stdin != nil {
		ss.stdin.Close()
	}
	if ss.sizes != nil {
		ss.sizes.Close()
	}
	// Characters held back for a next read that will not come.
	stdout.flush()
	if stderr != nil {
		stderr.flush()
	}
	exitCode := ss.finishResumable(err) // finish, resume.go
	reason, closeCode := ss.hangUp(readDone)
	ss.release()
	in, out, duration := ss.bytesIn.Load(), ss.bytesOut.Load(), time.Since(ss.start)
	attrs := []any{"event", "close", "sub", c.Subject, "namespace", c.Namespace, "pod", c.Pod,
		"container", c.Container, "command", c.Command, "tty", c.TTY, "transport", string(res.Transport),
		"bytes_in", in, "bytes_out", out, "exit_code", exitCode,
		"close_code", closeCode, "duration", duration.String(), "reason", reason}
	if err != nil && exitCode < 0 && !errors.Is(err, context.Canceled) {
		attrs = append(attrs, "error", err.Error())
	}
	attrs = append(attrs, ss.resumeCloseAttrs()...)
	attrs = append(attrs, ss.closeRecording(exitCode, reason)...)
	ss.logger().Info("session closed", attrs...)
	ss.tel.ended(ss.ctx, reason, in, out, duration)
	span := trace.SpanFromContext(ss.ctx)
	span.SetAttributes(attribute.String("k8s_ws_proxy.transport", string(res.Transport)),
		attribute.Int("k8s_ws_proxy.exit_code", exitCode), attribute.String("k8s_ws_proxy.close_reason", reason))
	if reason == "exec_failed" {
		span.SetStatus(codes.Error, reason)
	}
}

// closeWait is how long the session still waits for the client's close
// reply: DefaultCloseTimeout, or what is left of an ending's bound.
func (ss *session) closeWait() time.Duration {
	if by := ss.closeBy.Load(); by != 0 {
		return max(time.Until(time.Unix(0, by)), 0)
	}
	return DefaultCloseTimeout
}

// bound makes every write from now on finish by now+d and the session's
// connection close by then: a writer stalled on a client that does not
// read gives up, and releases the write lock, by that time.
func (ss *session) bound(d time.Duration) time.Time {
	by := time.Now().Add(d)
	for {
		old := ss.closeBy.Load()
		if old != 0 && old <= by.UnixNano() {
			return time.Unix(0, old)
		}
		if ss.closeBy.CompareAndSwap(old, by.UnixNano()) {
			break
		}
	}
	if ss.upgraded.Load() {
		ss.liveOut().limitWrites(by)
	}
	return by
}

// finish sends the exec's outcome and a close frame, unless the client is
// already gone. Everything the exec wrote has been sent by now: the frame
// writers are synchronous and Stream returns after its output is copied.
func (ss *session) finish(err error) (exitCode int) {
	exitCode, closeCode := -1, websocket.CloseNormalClosure
	var status *metav1.Status
	var codeErr utilexec.CodeExitError
	switch {
	case err == nil:
		exitCode = 0
		status = &metav1.Status{Status: metav1.StatusSuccess}
		ss.setEndReason("exited")
	case errors.As(err, &codeErr) && codeErr.Exited():
		exitCode = codeErr.ExitStatus()
		status = &metav1.Status{
			Status:  metav1.StatusFailure,
			Reason:  streamproto.NonZeroExitCodeReason,
			Message: fmt.Sprintf("command terminated with non-zero exit code: %v", codeErr),
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: streamproto.ExitCodeCauseType, Message: fmt.Sprintf("%d", exitCode)}}},
		}
		ss.setEndReason("exited")
	case ss.ctx.Err() != nil:
		// The client left or the session was terminated; what there was
		// to say has been said.
		return -1
	default:
		// The client reads what failed, not where (clientStatus); the
		// close log line keeps err.
		status = clientStatus(err)
		closeCode = websocket.CloseInternalServerErr
		ss.setEndReason("exec_failed")
	}
	if exitCode >= 0 {
		ss.exitNotice(exitCode)
	}
	ss.sendStatusAndClose(status, closeCode, "")
	return exitCode
}

// statusPayload is what channel 3 carries for st: JSON for v4/v5, the bare
// message for older protocols (nothing for their success). It fits one
// frame: the message text is shortened, never the JSON around it.
func (ss *session) statusPayload(st *metav1.Status) []byte {
	limit := ss.payload
	if !ss.proto.statusJSON {
		if st.Status == metav1.StatusSuccess {
			return nil
		}
		return []byte(shorten(st.Message, limit))
	}
	payload, _ := json.Marshal(st)
	if len(payload) <= limit {
		return payload
	}
	// Shorten the longest text first (an internal error repeats its
	// message in a cause; an exit code's cause is one digit), by what is
	// over but at most by half per step, until it fits: JSON escaping can
	// make a text longer on the wire than in memory.
	short := *st
	texts := []*string{&short.Message}
	if st.Details != nil {
		d := *st.Details
		d.Causes = append([]metav1.StatusCause(nil), d.Causes...)
		short.Details = &d
		for i := range d.Causes {
			texts = append(texts, &d.Causes[i].Message)
		}
	}
	for len(payload) > limit {
		longest := texts[0]
		for _, txt := range texts[1:] {
			if len(*txt) > len(*longest) {
				longest = txt
			}
		}
		if *longest == "" {
			break
		}
		*longest = shorten(*longest, max(len(*longest)-(len(payload)-limit), len(*longest)/2))
		payload, _ = json.Marshal(&short)
	}
	if short.Details != nil {
		kept := short.Details.Causes[:0]
		for _, c := range short.Details.Causes {
			if c != (metav1.StatusCause{}) {
				kept = append(kept, c)
			}
		}
		short.Details.Causes = kept
		payload, _ = json.Marshal(&short)
	}
	if len(payload) > limit {
		payload, _ = json.Marshal(&metav1.Status{Status: st.Status, Reason: st.Reason})
	}
	return payload
}

// shorten cuts s to at most n bytes on a character boundary, marking the
// cut with an ellipsis when there is room for one.
func shorten(s string, n int) string {
	n = max(n, 0)
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	if cut < 0 {
		cut = n
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	if n-cut >= len("…") {
		return s[:cut] + "…"
	}
	return s[:cut]
}

// sendStatusAndClose writes the status on channel 3 and a close frame, and
// marks the session closed to further frames.
func (ss *session) sendStatusAndClose(st *metav1.Status, closeCode int, closeText string) {
	payload := ss.statusPayload(st)
	ss.keepFinal(st, closeCode, closeText) // resume.go
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if ss.closed || ss.gone.Load() {
		return
	}
	if len(payload) > 0 {
		_ = ss.writeFrameLocked(chanError, payload)
	}
	ss.writeCloseLocked(closeCode, closeText)
}

// writeCloseLocked sends a close frame (the first one only) and records
// its code as what the client got.
func (ss *session) writeCloseLocked(code int, text string) {
	if ss.closed {
		return
	}
	ss.closed = true
	text = shorten(text, 123) // the limit of a close frame's reason
	deadline := time.Now().Add(DefaultCloseTimeout)
	if err := ss.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), deadline); err == nil {
		ss.closeCode.CompareAndSwap(0, int32(code))
	}
}

// onClientClose answers a client's close frame with its code, as RFC 6455
// asks (gorilla's default), except for a close frame whose payload is one
// byte, which is malformed (1002).
func (ss *session) onClientClose(code int, _ string) error {
	reply := code
	if code == websocket.CloseNoStatusReceived {
		reply = websocket.CloseNormalClosure
		if ss.badClose.Load() {
			reply = websocket.CloseProtocolError
		}
	}
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	ss.writeCloseLocked(reply, "")
	return nil
}

// terminate ends a live session from the proxy's side (drain, limits). The
// user reads why in the terminal (guacd shows only stdout and stderr) and on
// channel 3, then the connection closes with code. All of it is bounded by
// endingGrace, whatever the client or the exec are doing.
func (ss *session) terminate(reason string, code int, message string) {
	if !ss.setEndReason(reason) {
		ss.cancel() // ending already; make sure the exec stops
		return
	}
	ss.bound(endingGrace)
	if ss.upgraded.Load() && !ss.gone.Load() {
		st := &metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonServiceUnavailable, Message: message}
		ss.sendNotice("\r\n[k8s-ws-proxy] " + message + "\r\n")
		ss.sendStatusAndClose(st, code, message)
	}
	ss.cancel()
}

// sendNotice writes a line for the user on the terminal's own stream:
// stdout with a tty, stderr without one (never into a program's stdout).
func (ss *session) sendNotice(text string) {
	switch {
	case ss.claims.TTY:
		_, _ = ss.writeOutput(chanStdout, []byte(text), false)
	case ss.stderr:
		_, _ = ss.writeOutput(chanStderr, []byte(text), false)
	}
}

// writeOutput sends p on channel, cut into frames of at most the
// negotiated size (with whole, never splitting a UTF-8 character), and
// returns once they are all written: output is never reordered or held
// back past the exec's end. The frames of one call share as few system
// calls as maxBatch allows.
func (ss *session) writeOutput(channel byte, p []byte, whole bool) (int, error) {
	return ss.sendOutput(channel, p, whole, false)
}

// writeProcessOutput is writeOutput for the process's own bytes: a
// required recording takes them before the client does (under the same
// lock, so in the same order), and once it has failed nothing more is
// sent, so no output reaches the user unrecorded.
func (ss *session) writeProcessOutput(channel byte, p []byte, whole bool) (int, error) {
	return ss.sendOutput(channel, p, whole, true)
}

func (ss *session) sendOutput(channel byte, p []byte, whole, process bool) (int, error) {
	if ss.res != nil {
		return ss.sendResumable(channel, p, whole, process)
	}
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if ss.closed || ss.gone.Load() {
		return 0, errSessionClosed
	}
	recorded, err := ss.recordFirst(channel, p, process)
	if err != nil {
		return 0, err
	}
	orig, written := p, 0 // written: set by the return below, read by the deferred tap
	defer func() { ss.passOn(recorded, channel, orig[:written]) }()
	written, err = ss.writeFramesLocked(channel, p, whole)
	ss.addOutput(written)
	return written, err
}

// recordFirst gives a required recording the process's output before the
// client gets it; errRecordingFailed once that recording has failed.
func (ss *session) recordFirst(channel byte, p []byte, process bool) (recorded bool, err error) {
	if !process || ss.rec == nil || !ss.rec.required {
		return false, nil
	}
	ss.recordOutput(channel, p)
	if ss.rec.stopped.Load() {
		return true, errRecordingFailed
	}
	return true, nil
}

// writeFramesLocked writes p in frames of the negotiated size, batched, and
// says how much of p went out in whole batches; a failure marks the write
// failed (writeFailed).
func (ss *session) writeFramesLocked(channel byte, p []byte, whole bool) (written int, err error) {
	for len(p) > 0 {
		// One batch: frames until the output ends or the batch is full.
		ss.out.startBatch()
		n := 0
		for n < len(p) && err == nil && ss.out.batched() < maxBatch {
			k := min(len(p)-n, ss.payload)
			if whole && n+k < len(p) {
				k = runeCut(p[n:], k)
			}
			err = ss.writeFrameLocked(channel, p[n:n+k])
			n += k
		}
		if ferr := ss.out.flush(); err == nil {
			err = ferr
		}
		if err != nil {
			ss.writeFailed()
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// runeCut moves a frame cut at k in b back to the start of the UTF-8
// character it would split, if any (and if the frame keeps a byte). Bytes
// that are not UTF-8 are cut anywhere.
func runeCut(b []byte, k int) int {
	for j := k; j > 0 && k-j < utf8.UTFMax-1; j-- {
		if utf8.RuneStart(b[j]) {
			if j == k || b[j] < 0xC0 {
				return k // k starts a character, or the bytes are not UTF-8
			}
			if r, size := utf8.DecodeRune(b[j:]); r != utf8.RuneError && j+size > k {
				return j
			}
			return k
		}
	}
	return k
}

// incompleteTail is how many bytes at the end of b begin a UTF-8 character
// that continues in later output (at most 3; 0 for anything else).
func incompleteTail(b []byte) int {
	for i := len(b) - 1; i >= 0 && len(b)-i < utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if b[i] >= 0xC0 && !utf8.FullRune(b[i:]) {
				return len(b) - i
			}
			return 0
		}
	}
	return 0
}

func (ss *session) addOutput(n int) {
	if n > 0 {
		ss.bytesOut.Add(int64(n))
		ss.touch()
	}
}

// writeFrameLocked writes one whole frame, into the open batch if there is
// one. Binary frames go straight into the batch (batchConn.writeFrame);
// base64 ones through gorilla.
func (ss *session) writeFrameLocked(channel byte, payload []byte) error {
	deadline := time.Now().Add(ss.cfg.WriteTimeout)
	var err error
	if !ss.proto.base64 {
		_ = ss.out.SetWriteDeadline(deadline)
		err = ss.out.writeFrame(channel, payload)
	} else {
		ss.wbuf = ss.proto.encodeFrame(ss.wbuf[:0], channel, payload)
		_ = ss.conn.SetWriteDeadline(deadline)
		// WriteMessage on a server connection without compression sends the
		// whole message as one frame: guacd cannot reassemble continuations.
		err = ss.conn.WriteMessage(websocket.TextMessage, ss.wbuf)
	}
	if err != nil {
		ss.writeFailed()
		return err
	}
	return nil
}

// writeFailed ends a session whose client cannot be written to.
func (ss *session) writeFailed() {
	if ss.resumeOnWriteFailure() {
		return // detached: the session waits for a resume
	}
	ss.closed = true
	ss.setEndReason("client_write_failed")
	ss.clientGone()
}

// clientGone stops the exec and drops the connection at once: nothing
// more can reach the client, and no lock is taken, so that a writer
// stalled on the connection cannot delay the exec's end.
func (ss *session) clientGone() {
	ss.gone.Store(true)
	ss.cancel()
	if ss.upgraded.Load() {
		ss.conn.Close()
	}
}

// frameWriter is the exec's stdout or stderr. With whole it holds back
// the start of a UTF-8 character that the next write completes.
type frameWriter struct {
	ss      *session
	channel byte
	whole   bool
	mu      sync.Mutex // client-go's copy may still be writing when a cancelled Stream returns
	held    []byte     // at most 3 bytes
}

func (fw *frameWriter) Write(p []byte) (int, error) {
	if !fw.whole {
		return fw.ss.writeProcessOutput(fw.channel, p, false)
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	n := len(p)
	if len(fw.held) > 0 {
		p = append(fw.held, p...)
		fw.held = nil
	}
	keep := incompleteTail(p)
	if _, err := fw.ss.writeProcessOutput(fw.channel, p[:len(p)-keep], true); err != nil {
		return 0, err
	}
	fw.held = append(fw.held[:0:0], p[len(p)-keep:]...)
	return n, nil
}

// flush sends what was held back: the stream ended. A writer still busy
// means the session was cancelled: nothing more is owed then.
func (fw *frameWriter) flush() {
	if !fw.mu.TryLock() {
		return
	}
	defer fw.mu.Unlock()
	if len(fw.held) > 0 && fw.ss.ctx.Err() == nil {
		_, _ = fw.ss.writeProcessOutput(fw.channel, fw.held, false)
		fw.held = nil
	}
}

// warnOnce logs a client protocol problem once per session and kind: a
// broken client must not be able to flood the log.
func (ss *session) warnOnce(kind, msg string, attrs ...any) {
	if _, loaded := ss.warned.LoadOrStore(kind, true); loaded {
		return
	}
	ss.logger().Warn(msg, append([]any{"event", "protocol_warning", "kind", kind}, attrs...)...)
}

// readLoop feeds client frames to the exec until the client goes away.
// Stdin goes to a bounded queue: the loop waits for room only once the
// queue is full, and a client that is sending while it waits is alive, so
// the read deadline starts afresh afterwards.
func (ss *session) readLoop() {
	stdinClosed := false
	defer func() {
		if ss.stdin != nil && !ss.keepStdin() {
			ss.stdin.closeWrite()
		}
	}()
	for {
		mt, msg, err := ss.conn.ReadMessage()
		if err != nil {
			ss.clientEnded(err)
			return
		}
		ss.touch()
		ss.extendReadDeadline()
		if (mt == websocket.TextMessage) != ss.proto.base64 {
			want := "binary"
			if ss.proto.base64 {
				want = "text"
			}
			ss.setEndReason("protocol_error")
			ss.warnOnce("frame_type", "client sent the wrong frame type; closing", "protocol", ss.proto.name)
			ss.terminateProtocol(websocket.CloseUnsupportedData, fmt.Sprintf("%s requires %s frames", ss.proto.name, want))
			return
		}
		f, err := decodeFrame(ss.proto, msg)
		if errors.Is(err, errEmptyFrame) {
			ss.warnOnce("empty_frame", "client sent an empty frame; ignored")
			continue
		}
		if err != nil {
			ss.warnOnce("bad_frame", "client sent an undecodable frame; ignored", "error", err.Error())
			continue
		}
		switch {
		case f.channel == chanStdin:
			switch {
			case ss.stdin == nil:
				ss.warnOnce("stdin_not_granted", "client sent stdin but the token grants none; ignored")
			case stdinClosed:
				ss.warnOnce("stdin_after_close", "client sent stdin after closing it; ignored")
			case len(f.payload) == 0:
			default:
				waited, err := ss.stdin.push(ss.pushCtx(), f.payload)
				if err != nil {
					stdinClosed = true // the exec is gone
					continue
				}
				if waited {
					ss.readExtended.Store(0)
					ss.extendReadDeadline()
				}
				ss.recordInput(f.payload)
			}
		case f.channel == chanResize:
			if ss.sizes == nil {
				ss.warnOnce("resize_without_tty", "client sent a resize without a tty; ignored")
				continue
			}
			size, err := parseResize(f.payload)
			if err != nil {
				ss.warnOnce("bad_resize", "client sent an invalid resize; ignored", "error", err.Error())
				continue
			}
			ss.sizes.Set(size)
			ss.recordResize(size)
		case f.channel == chanClose && ss.proto.streamClose && !ss.proto.base64:
			if len(f.payload) != 1 {
				ss.warnOnce("bad_close", "client sent a malformed stream close; ignored")
				continue
			}
			if f.payload[0] == chanStdin && ss.stdin != nil && !stdinClosed {
				stdinClosed = true
				ss.stdin.closeWrite()
			}
		default:
			ss.warnOnce("unknown_channel", "client sent a frame on an unknown channel; ignored", "channel", int(f.channel))
		}
	}
}

// terminateProtocol closes the connection for a client protocol error.
func (ss *session) terminateProtocol(code int, why string) {
	ss.bound(endingGrace)
	st := &metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonBadRequest, Message: why}
	ss.sendStatusAndClose(st, code, why)
	ss.cancel()
}

// clientEnded records how the client left and stops the exec at once: guacd
// leaves with a bare EOF, and its user's shell must not outlive it.
func (ss *session) clientEnded(err error) {
	if ss.resumeOnDrop(err) {
		return // detached: the session waits for a resume
	}
	var ce *websocket.CloseError
	closeFrame := errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure
	switch {
	case closeFrame && ce.Code == websocket.CloseMessageTooBig, errors.Is(err, websocket.ErrReadLimit):
		ss.setEndReason("message_too_big")
		if !closeFrame {
			// gorilla sent 1009 itself.
			ss.closeCode.CompareAndSwap(0, websocket.CloseMessageTooBig)
		}
	case closeFrame:
		ss.setEndReason(fmt.Sprintf("client_closed_%d", ce.Code))
	case isTimeout(err):
		ss.setEndReason("ping_timeout")
	case isProtocolError(err):
		// gorilla sent 1002 itself.
		ss.setEndReason("protocol_error")
		ss.closeCode.CompareAndSwap(0, websocket.CloseProtocolError)
	default:
		// EOF without a close frame (gorilla reports it as 1006): guacd's
		// way of leaving.
		ss.setEndReason("client_gone")
	}
	if closeFrame || errors.Is(err, websocket.ErrReadLimit) || isProtocolError(err) {
		// Our close frame is out; the exec stops, the connection closes
		// once the reply had its chance.
		ss.bound(endingGrace)
		ss.cancel()
		return
	}
	ss.clientGone()
}

// isProtocolError reports a read that gorilla failed for a protocol
// violation, after sending 1002.
func isProtocolError(err error) bool {
	var ce *websocket.CloseError
	var ne net.Error
	return err != nil && !errors.As(err, &ce) && !errors.As(err, &ne) && !errors.Is(err, io.EOF) &&
		!errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) && strings.HasPrefix(err.Error(), "websocket: ")
}
