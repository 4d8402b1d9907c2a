package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// serveSession authorises an upgrade request, upgrades it and bridges the
// session until it ends. Every refusal happens before the upgrade.
func (s *Server) serveSession(w http.ResponseWriter, r *http.Request, attach bool) {
	start := time.Now()
	ctx, span := s.tel.tracer.Start(r.Context(), "k8s_ws_proxy.session", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	sid := ""
	refuse := func(rej *rejection) {
		if sid == "" {
			sid = newSessionID()
		}
		s.log.Warn("session rejected", "sid", sid, "event", "rejected", "status", rej.status,
			"reason", rej.reason, "detail", rej.message, "remote", r.RemoteAddr)
		s.tel.rejected(ctx, rej.reason, rej.status, rej.auth)
		span.SetAttributes(attribute.String("k8s_ws_proxy.sid", sid), attribute.String("k8s_ws_proxy.rejection", rej.reason),
			attribute.Int("http.response.status_code", rej.status))
		span.SetStatus(codes.Error, rej.reason)
		writeRejection(w, rej)
	}
	if s.draining.Load() {
		refuse(reject(http.StatusServiceUnavailable, "draining", "the proxy is shutting down; retry on another instance"))
		return
	}
	if !s.originAllowed(r) {
		refuse(reject(http.StatusForbidden, "origin_not_allowed", "Origin %q is not allowed", r.Header.Get("Origin")))
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		refuse(reject(http.StatusBadRequest, "not_websocket", "this endpoint only serves WebSocket upgrades (Kubernetes channel protocol)"))
		return
	}
	req, rej := parseExecRequest(r, attach)
	if rej != nil {
		refuse(rej)
		return
	}
	_, verifySpan := s.tel.tracer.Start(ctx, "k8s_ws_proxy.token.verify")
	claims, err := s.cfg.Verifier.Verify(req.token)
	if err != nil {
		verifySpan.SetStatus(codes.Error, string(hmac.ReasonOf(err)))
		verifySpan.End()
		refuse(tokenRejection(err))
		return
	}
	verifySpan.End()
	sid = claims.SID
	if sid == "" || len(sid) > 64 {
		sid = newSessionID()
	}
	if rej := req.checkScope(claims, s.cfg.NodeName); rej != nil {
		refuse(rej)
		return
	}
	protoName, err := negotiateProtocol(req.protocols)
	if err != nil {
		refuse(reject(http.StatusBadRequest, "unsupported_subprotocol", "%v", err))
		return
	}
	stderr, rej := req.wantStderr(claims.TTY)
	if rej != nil {
		refuse(rej)
		return
	}
	span.SetAttributes(attribute.String("k8s_ws_proxy.sid", sid), attribute.String("k8s.namespace.name", claims.Namespace),
		attribute.String("k8s.pod.name", claims.Pod), attribute.String("k8s.container.name", claims.Container))
	if rej := s.checkPod(ctx, claims); rej != nil {
		refuse(rej)
		return
	}

	sess := &session{
		srv:    s,
		id:     sid,
		claims: claims,
		proto:  protocolFor(protoName),
		start:  start,
		stderr: stderr,
	}
	sess.payload = sess.proto.maxPayload(s.cfg.MaxFrameSize)
	sess.ctx, sess.cancel = context.WithCancel(context.Background())
	defer sess.cancel()
	if rej := s.register(sess); rej != nil {
		refuse(rej)
		return
	}
	defer s.unregister(sess)

	var hdr http.Header
	if protoName != "" {
		hdr = http.Header{"Sec-Websocket-Protocol": {protoName}}
	}
	bw := &batchingWriter{ResponseWriter: w}
	conn, err := s.upgrader.Upgrade(bw, r, hdr)
	if err != nil {
		// The upgrader has already answered the client.
		s.log.Warn("session rejected", "sid", sid, "event", "rejected", "reason", "upgrade_failed", "detail", err.Error(), "remote", r.RemoteAddr)
		return
	}
	sess.wmu.Lock()
	sess.conn, sess.out = conn, bw.conn
	sess.wmu.Unlock()
	sess.traceCtx = ctx
	s.tel.active.Add(ctx, 1)
	defer s.tel.active.Add(ctx, -1)
	sess.run()
}

func (s *Server) register(sess *session) *rejection {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return reject(http.StatusServiceUnavailable, "draining", "the proxy is shutting down; retry on another instance")
	}
	if len(s.sessions) >= s.cfg.MaxSessions {
		return reject(http.StatusServiceUnavailable, "too_many_sessions", "the proxy is at its limit of %d concurrent sessions", s.cfg.MaxSessions)
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	return nil
}

func (s *Server) unregister(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.wg.Done()
}

var errSessionClosed = errors.New("session closed")

// session is one bridged WebSocket connection.
type session struct {
	srv     *Server
	id      string
	claims  *hmac.Claims
	proto   wireProtocol
	start   time.Time
	stderr  bool
	payload int // payload bytes per outbound frame
	conn    *websocket.Conn
	out     *batchConn // under conn

	ctx    context.Context
	cancel context.CancelFunc

	wmu    sync.Mutex // one writer at a time on the connection
	wbuf   []byte
	closed bool // a close frame was sent; no more frames

	stdinW    *io.PipeWriter
	stdinR    *io.PipeReader
	sizes     *sizeQueue
	bytesIn   atomic.Int64
	bytesOut  atomic.Int64
	endReason atomic.Pointer[string]
	warned    sync.Map // warning kinds already logged for this session

	lastActivity atomic.Int64 // unix nanoseconds of the last data frame either way
	readExtended atomic.Int64 // unix nanoseconds of the last read deadline extension

	traceCtx context.Context
}

func (ss *session) logger() *slog.Logger {
	return ss.srv.log.With("sid", ss.id)
}

// setEndReason records why the session ended; the first reason wins.
func (ss *session) setEndReason(r string) { ss.endReason.CompareAndSwap(nil, &r) }

func (ss *session) run() {
	c := ss.claims
	ss.conn.SetReadLimit(ss.srv.cfg.MaxMessageSize)
	ss.touch()
	stopTimers := ss.startTimers()
	defer stopTimers()

	target := exec.Target{
		Namespace: c.Namespace, Pod: c.Pod, Container: c.Container, Command: c.Command,
		TTY: c.TTY, Stdin: c.Stdin, Stdout: true, Stderr: ss.stderr,
	}
	streams := exec.Streams{Stdout: &frameWriter{ss, chanStdout}}
	if ss.stderr {
		streams.Stderr = &frameWriter{ss, chanStderr}
	}
	if c.Stdin {
		ss.stdinR, ss.stdinW = io.Pipe()
		streams.Stdin = ss.stdinR
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
		ss.readLoop()
	}()

	_, dialSpan := ss.srv.tel.tracer.Start(ss.traceCtx, "k8s_ws_proxy.exec.dial")
	var dialed atomic.Bool
	execCtx := exec.WithDialObserver(ss.ctx, func(d time.Duration) {
		if !dialed.Swap(true) {
			ss.srv.tel.execDial.Record(ss.traceCtx, d.Seconds())
			dialSpan.End()
		}
	})
	res, err := ss.srv.cfg.Executor.Stream(execCtx, target, streams)
	if !dialed.Load() {
		dialSpan.SetStatus(codes.Error, "exec dial failed")
		dialSpan.End()
	}

	// Unblock a reader stuck handing stdin to an exec that is gone.
	if ss.stdinR != nil {
		ss.stdinR.CloseWithError(errSessionClosed)
	}
	if ss.sizes != nil {
		ss.sizes.Close()
	}
	exitCode, closeCode := ss.finish(err)
	// Wait for the client's close reply, then drop the connection.
	select {
	case <-readDone:
	case <-time.After(DefaultCloseTimeout):
	}
	ss.conn.Close()
	<-readDone

	reason := "unknown"
	if r := ss.endReason.Load(); r != nil {
		reason = *r
	}
	in, out, duration := ss.bytesIn.Load(), ss.bytesOut.Load(), time.Since(ss.start)
	attrs := []any{"event", "close", "sub", c.Subject, "namespace", c.Namespace, "pod", c.Pod,
		"container", c.Container, "command", c.Command, "tty", c.TTY, "transport", string(res.Transport),
		"bytes_in", in, "bytes_out", out, "exit_code", exitCode,
		"close_code", closeCode, "duration", duration.String(), "reason", reason}
	if err != nil && exitCode < 0 && reason != "client_gone" {
		attrs = append(attrs, "error", err.Error())
	}
	ss.logger().Info("session closed", attrs...)
	ss.srv.tel.ended(ss.traceCtx, reason, in, out, duration)
	span := trace.SpanFromContext(ss.traceCtx)
	span.SetAttributes(attribute.String("k8s_ws_proxy.transport", string(res.Transport)),
		attribute.Int("k8s_ws_proxy.exit_code", exitCode), attribute.String("k8s_ws_proxy.close_reason", reason))
	if reason == "exec_failed" {
		span.SetStatus(codes.Error, reason)
	}
}

// finish sends the exec's outcome and a close frame, unless the client is
// already gone. Everything the exec wrote has been sent by now: the frame
// writers are synchronous and Stream returns after its output is copied.
func (ss *session) finish(err error) (exitCode, closeCode int) {
	exitCode, closeCode = -1, websocket.CloseNormalClosure
	var status *metav1.Status
	var codeErr utilexec.CodeExitError
	var statusErr *apierrors.StatusError
	switch {
	case err == nil:
		exitCode = 0
		status = &metav1.Status{Status: metav1.StatusSuccess}
		ss.setEndReason("exited")
	case errors.As(err, &codeErr) && codeErr.Exited():
		exitCode = codeErr.ExitStatus()
		status = &metav1.Status{
			Status:  metav1.StatusFailure,
			Reason:  "NonZeroExitCode",
			Message: fmt.Sprintf("command terminated with non-zero exit code: %v", codeErr),
			Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: "ExitCode", Message: fmt.Sprintf("%d", exitCode)}}},
		}
		ss.setEndReason("exited")
	case ss.ctx.Err() != nil:
		// The client left or the session was terminated; nothing to send.
		return -1, 0
	case errors.As(err, &statusErr):
		st := statusErr.Status()
		status = &st
		closeCode = websocket.CloseInternalServerErr
		ss.setEndReason("exec_failed")
	default:
		st := apierrors.NewInternalError(err).Status()
		status = &st
		closeCode = websocket.CloseInternalServerErr
		ss.setEndReason("exec_failed")
	}
	ss.sendStatusAndClose(status, closeCode, "")
	return exitCode, closeCode
}

// sendStatusAndClose writes the status on channel 3 (JSON for v4/v5, the
// bare message for older protocols, nothing for an older protocol's success)
// and a close frame, and marks the session closed to further frames.
func (ss *session) sendStatusAndClose(st *metav1.Status, closeCode int, closeText string) {
	var payload []byte
	if ss.proto.statusJSON {
		payload, _ = json.Marshal(st)
	} else if st.Status != metav1.StatusSuccess {
		payload = []byte(st.Message)
	}
	if max := ss.payload; len(payload) > max {
		payload = payload[:max] // a status never spans frames; guacd ignores it anyway
	}
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if ss.closed {
		return
	}
	if len(payload) > 0 {
		_ = ss.writeFrameLocked(chanError, payload)
	}
	if len(closeText) > 123 {
		closeText = closeText[:123] // the limit of a close frame's reason
	}
	deadline := time.Now().Add(DefaultCloseTimeout)
	_ = ss.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(closeCode, closeText), deadline)
	ss.closed = true
}

// terminate ends a live session from the proxy's side (drain, limits). The
// user reads why in the terminal (guacd shows only stdout and stderr) and on
// channel 3, then the connection closes with code.
func (ss *session) terminate(reason string, code int, message string) {
	ss.setEndReason(reason)
	st := &metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonServiceUnavailable, Message: message}
	ss.wmu.Lock()
	live := ss.conn != nil
	ss.wmu.Unlock()
	if live {
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
		_, _ = ss.writeOutput(chanStdout, []byte(text))
	case ss.stderr:
		_, _ = ss.writeOutput(chanStderr, []byte(text))
	}
}

// writeOutput sends p on channel, cut into frames of at most the
// negotiated size, and returns once they are all written: output is never
// reordered or held back past the exec's end. The frames of one call share
// as few system calls as maxBatch allows.
func (ss *session) writeOutput(channel byte, p []byte) (int, error) {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	if ss.closed {
		return 0, errSessionClosed
	}
	written := 0
	for len(p) > 0 {
		// One batch: frames until the output ends or the batch is full.
		ss.out.startBatch()
		n, err := 0, error(nil)
		for n < len(p) && err == nil && ss.out.batched() < maxBatch {
			k := min(len(p)-n, ss.payload)
			err = ss.writeFrameLocked(channel, p[n:n+k])
			n += k
		}
		if ferr := ss.out.flush(); err == nil {
			err = ferr
		}
		if err != nil {
			ss.writeFailed()
			ss.addOutput(written)
			return written, err
		}
		written += n
		p = p[n:]
	}
	ss.addOutput(written)
	return written, nil
}

func (ss *session) addOutput(n int) {
	if n > 0 {
		ss.bytesOut.Add(int64(n))
		ss.touch()
	}
}

// writeFrameLocked has gorilla write one whole frame, into the open batch
// if there is one.
func (ss *session) writeFrameLocked(channel byte, payload []byte) error {
	ss.wbuf = ss.proto.encodeFrame(ss.wbuf[:0], channel, payload)
	mt := websocket.BinaryMessage
	if ss.proto.base64 {
		mt = websocket.TextMessage
	}
	_ = ss.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg.WriteTimeout))
	// WriteMessage on a server connection without compression sends the
	// whole message as one frame: guacd cannot reassemble continuations.
	if err := ss.conn.WriteMessage(mt, ss.wbuf); err != nil {
		ss.writeFailed()
		return err
	}
	return nil
}

// writeFailed ends a session whose client cannot be written to.
func (ss *session) writeFailed() {
	ss.closed = true
	ss.setEndReason("client_write_failed")
	ss.cancel()
}

// frameWriter is the exec's stdout or stderr.
type frameWriter struct {
	ss      *session
	channel byte
}

func (fw *frameWriter) Write(p []byte) (int, error) { return fw.ss.writeOutput(fw.channel, p) }

// warnOnce logs a client protocol problem once per session and kind: a
// broken client must not be able to flood the log.
func (ss *session) warnOnce(kind, msg string, attrs ...any) {
	if _, loaded := ss.warned.LoadOrStore(kind, true); loaded {
		return
	}
	ss.logger().Warn(msg, append([]any{"event", "protocol_warning", "kind", kind}, attrs...)...)
}

// readLoop feeds client frames to the exec until the client goes away.
func (ss *session) readLoop() {
	stdinClosed := false
	defer func() {
		if ss.stdinW != nil {
			ss.stdinW.Close()
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
			case ss.stdinW == nil:
				ss.warnOnce("stdin_not_granted", "client sent stdin but the token grants none; ignored")
			case stdinClosed:
				ss.warnOnce("stdin_after_close", "client sent stdin after closing it; ignored")
			case len(f.payload) == 0:
			default:
				if _, err := ss.stdinW.Write(f.payload); err != nil {
					stdinClosed = true // the exec is gone or stopped reading
					continue
				}
				ss.bytesIn.Add(int64(len(f.payload)))
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
		case f.channel == chanClose && ss.proto.streamClose && !ss.proto.base64:
			if len(f.payload) != 1 {
				ss.warnOnce("bad_close", "client sent a malformed stream close; ignored")
				continue
			}
			if f.payload[0] == chanStdin && ss.stdinW != nil && !stdinClosed {
				stdinClosed = true
				ss.stdinW.Close()
			}
		default:
			ss.warnOnce("unknown_channel", "client sent a frame on an unknown channel; ignored", "channel", int(f.channel))
		}
	}
}

// terminateProtocol closes the connection for a client protocol error.
func (ss *session) terminateProtocol(code int, why string) {
	st := &metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonBadRequest, Message: why}
	ss.sendStatusAndClose(st, code, why)
	ss.cancel()
}

// clientEnded records how the client left and stops the exec at once: guacd
// leaves with a bare EOF, and its user's shell must not outlive it.
func (ss *session) clientEnded(err error) {
	var ce *websocket.CloseError
	closeFrame := errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure
	switch {
	case closeFrame && ce.Code == websocket.CloseMessageTooBig, errors.Is(err, websocket.ErrReadLimit):
		ss.setEndReason("message_too_big")
	case closeFrame:
		ss.setEndReason(fmt.Sprintf("client_closed_%d", ce.Code))
	case isTimeout(err):
		ss.setEndReason("ping_timeout")
	default:
		// EOF without a close frame (gorilla reports it as 1006): guacd's
		// way of leaving.
		ss.setEndReason("client_gone")
	}
	if !closeFrame {
		ss.wmu.Lock()
		ss.closed = true // nothing can be written to a vanished client
		ss.wmu.Unlock()
	}
	ss.cancel()
}
