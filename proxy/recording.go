package proxy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/recording"
)

// sessionRecording is a session's tap into its asciicast recording: the
// session calls it for what the client received, what it sent (when input
// is recorded), every resize and the end.
type sessionRecording struct {
	rec      *recording.Recording
	required bool
	stopped  atomic.Bool // a failure or the size limit ended recording
	once     sync.Once
	failure  atomic.Pointer[string] // "write_failed" or "max_bytes"
}

// recordingInstruments count recording outcomes (bounded labels only).
type recordingInstruments struct {
	failures metric.Int64Counter
	stored   metric.Int64Counter
}

func newRecordingInstruments(mp metric.MeterProvider) *recordingInstruments {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(instrumentationName)
	ri := &recordingInstruments{}
	ri.failures, _ = m.Int64Counter("k8s_ws_proxy.recording.failures",
		metric.WithDescription("Recordings that could not be opened or written, or hit their size limit, by reason and mode."))
	ri.stored, _ = m.Int64Counter("k8s_ws_proxy.recording.stored",
		metric.WithDescription("Recordings confirmed by the object store."))
	return ri
}

func (ss *session) recordingFailed(reason string) {
	if ss.recTel != nil && ss.recTel.failures != nil {
		ss.recTel.failures.Add(ss.ctx, 1, metric.WithAttributes(attribute.String("reason", reason),
			attribute.String("mode", string(ss.cfg.Recorder.Mode()))))
	}
}

// RecordingStored counts a recording the store confirmed; the uploader
// calls it.
func (s *Server) RecordingStored() {
	if s.recTel != nil && s.recTel.stored != nil {
		s.recTel.stored.Add(context.Background(), 1)
	}
}

// openRecording creates the session's recording before the upgrade. In
// required mode a recording that cannot be opened refuses the session.
func (ss *session) openRecording(protocol string) *rejection {
	r := ss.cfg.Recorder
	if !r.Enabled() {
		return nil
	}
	c := ss.claims
	title := c.Namespace + "/" + c.Pod
	if c.Container != "" {
		title += "/" + c.Container
	}
	if protocol == "" {
		protocol = ss.proto.name
	}
	rec, err := r.Open(recording.Header{
		Command: strings.Join(c.Command, " "), Title: title,
		SID: ss.id, Subject: c.Subject, Namespace: c.Namespace, Pod: c.Pod, Container: c.Container,
		Node: ss.cfg.NodeName, Transport: protocol, ProxyVersion: ss.cfg.Version,
	})
	if err != nil {
		ss.recordingFailed("open_failed")
		ss.logger().Warn("recording failed", "event", "recording_failed", "stage", "open",
			"mode", string(r.Mode()), "error", err.Error())
		if r.Required() {
			return reject(http.StatusServiceUnavailable, "recording_unavailable",
				"sessions must be recorded and the recording cannot be opened; retry later")
		}
		return nil
	}
	ss.rec = &sessionRecording{rec: rec, required: r.Required()}
	// A best-effort recording writes on a timer too: a failure found there
	// is logged and counted like one an event's write returns.
	rec.OnError(ss.recordingResult)
	return nil
}

// recordOutput taps output after the client has been sent it.
func (ss *session) recordOutput(channel byte, p []byte) {
	if ss.rec == nil || len(p) == 0 || ss.rec.stopped.Load() {
		return
	}
	st := recording.Stdout
	if channel == chanStderr {
		st = recording.Stderr
	}
	ss.recordingResult(ss.rec.rec.Output(st, p))
}

func (ss *session) recordInput(p []byte) {
	if ss.rec == nil || ss.rec.stopped.Load() {
		return
	}
	ss.recordingResult(ss.rec.rec.Input(p))
}

func (ss *session) recordResize(size TerminalSize) {
	if ss.rec == nil || ss.rec.stopped.Load() {
		return
	}
	ss.recordingResult(ss.rec.rec.Resize(int(size.Width), int(size.Height)))
}

// recordingResult acts on a failed recording write once: best-effort logs,
// counts and records no more; required also ends the session. The end
// runs in its own goroutine because the caller may hold the write lock.
func (ss *session) recordingResult(err error) {
	if err == nil {
		return
	}
	ss.rec.once.Do(func() {
		ss.rec.stopped.Store(true)
		reason := "write_failed"
		if errors.Is(err, recording.ErrMaxBytes) {
			reason = "max_bytes"
		}
		ss.rec.failure.Store(&reason)
		ss.recordingFailed(reason)
		mode := ss.cfg.Recorder.Mode()
		msg := "recording stopped; the session goes on"
		if ss.rec.required {
			msg = "recording failed; ending the session"
		}
		ss.logger().Warn(msg, "event", "recording_failed", "stage", "write", "reason", reason,
			"mode", string(mode), "bytes", ss.rec.rec.Bytes(), "error", err.Error())
		if !ss.rec.required {
			return
		}
		endReason, notice := "recording_failed", "session closed: the session recording failed"
		if reason == "max_bytes" {
			endReason, notice = "recording_limit", "session closed: the session recording reached its size limit"
		}
		go ss.terminate(endReason, websocket.CloseInternalServerErr, notice)
	})
}

// closeRecording writes the end marker and hands the file to the
// uploader; it returns audit attributes for the closed line.
func (ss *session) closeRecording(exitCode int, reason string) []any {
	if ss.rec == nil {
		return nil
	}
	err := ss.rec.rec.Close(recording.End{ExitCode: exitCode, Reason: reason})
	attrs := []any{"recording", ss.rec.rec.Path(), "recording_bytes", ss.rec.rec.Bytes()}
	if f := ss.rec.failure.Load(); f != nil {
		attrs = append(attrs, "recording_failure", *f)
	} else if err != nil && !ss.rec.stopped.Load() {
		ss.recordingFailed("close_failed")
		ss.logger().Warn("recording failed", "event", "recording_failed", "stage", "close",
			"mode", string(ss.cfg.Recorder.Mode()), "bytes", ss.rec.rec.Bytes(), "error", err.Error())
		attrs = append(attrs, "recording_failure", "close_failed")
	}
	return attrs
}

// discardRecording removes a recording of a session that never started.
func (ss *session) discardRecording() {
	if ss.rec == nil {
		return
	}
	ss.rec.rec.Discard()
	ss.rec = nil
}
