package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultObserverScrollback is how much recent output a joining observer
// receives first (--observer-scrollback).
const DefaultObserverScrollback = 64 << 10

// observerQueueBytes bounds what waits for one observer beyond its
// scrollback: an observer further behind is disconnected, so that the
// session never waits for its slowest watcher.
const observerQueueBytes = 1 << 20

// maxObserversPerSession bounds the fan-out of one session.
const maxObserversPerSession = 16

// ObserverFellBehindReason is the Status reason of an observer that was
// disconnected because it did not keep up with the session's output.
const ObserverFellBehindReason metav1.StatusReason = "ObserverFellBehind"

// observerScrollback is the configured scrollback in bytes; 0 or less
// keeps none.
func observerScrollback(cfg *Config) int {
	switch n := cfg.ObserverScrollback; {
	case n == 0:
		return DefaultObserverScrollback
	case n < 0:
		return 0
	default:
		return n
	}
}

// fanout copies a session's output to its scrollback and its observers'
// queues. output runs under the session's write lock and never blocks.
type fanout struct {
	mu        sync.Mutex
	limit     int  // scrollback bytes
	whole     bool // no tty: cut the scrollback at a character start
	back      scrollback
	observers map[*observer]struct{}
}

func (f *fanout) output(channel byte, p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.limit <= 0 && len(f.observers) == 0 {
		return
	}
	f.back.add(channel, p, f.limit, f.whole)
	if len(f.observers) == 0 {
		return
	}
	c := tapChunk{channel: channel, b: slices.Clone(p)}
	for o := range f.observers {
		if !o.push(c) {
			delete(f.observers, o)
			o.fellBehind()
		}
	}
}

// join adds o with the scrollback already queued: nothing is sent twice
// and nothing is missed between the two.
func (f *fanout) join(o *observer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.observers) >= maxObserversPerSession {
		return false
	}
	for _, c := range f.back.snapshot() {
		o.queue = append(o.queue, c)
		o.queued += len(c.b)
	}
	o.limit = o.queued + observerQueueBytes
	f.observers[o] = struct{}{}
	if o.queued > 0 {
		o.wake <- struct{}{}
	}
	return true
}

// leave removes o and returns what was still queued for it.
func (f *fanout) leave(o *observer) []tapChunk {
	f.mu.Lock()
	delete(f.observers, o)
	f.mu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.queue
	o.queue, o.queued = nil, 0
	return q
}

// ObserverInfo is one observer in GET /sessions.
type ObserverInfo struct {
	ID       string    `json:"id"`
	Subject  string    `json:"sub"`
	Protocol string    `json:"protocol"`
	Start    time.Time `json:"start"`
	BytesOut int64     `json:"bytes_out"`
	// IgnoredStdinBytes and IgnoredResizes count what the observer sent
	// and the proxy dropped: observers are read-only.
	IgnoredStdinBytes int64 `json:"ignored_stdin_bytes"`
	IgnoredResizes    int64 `json:"ignored_resizes"`
}

func (f *fanout) list() []ObserverInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]ObserverInfo, 0, len(f.observers))
	for o := range f.observers {
		out = append(out, o.info())
	}
	slices.SortFunc(out, func(a, b ObserverInfo) int { return a.Start.Compare(b.Start) })
	return out
}

// observers lists ss's observers (an empty list for none).
func (ss *session) observers() []ObserverInfo {
	if f := ss.fan.Load(); f != nil {
		return f.list()
	}
	return []ObserverInfo{}
}

// observer is one read-only connection to a live session. Its connection
// is a session without an exec (ss), so frames, batching, closing, pings
// and limits work as for the session itself.
type observer struct {
	ss     *session
	target *session
	id     string

	mu     sync.Mutex
	queue  []tapChunk
	queued int
	limit  int

	wake      chan struct{} // capacity 1: output was queued
	behind    chan struct{} // closed when the observer fell behind
	behindSet atomic.Bool

	ignoredIn      atomic.Int64
	ignoredResizes atomic.Int64
}

func (o *observer) info() ObserverInfo {
	return ObserverInfo{ID: o.id, Subject: o.ss.claims.Subject, Protocol: o.ss.proto.name, Start: o.ss.start.UTC(),
		BytesOut: o.ss.bytesOut.Load(), IgnoredStdinBytes: o.ignoredIn.Load(), IgnoredResizes: o.ignoredResizes.Load()}
}

// push queues c unless that would exceed the observer's bound.
func (o *observer) push(c tapChunk) bool {
	o.mu.Lock()
	if o.queued+len(c.b) > o.limit {
		o.mu.Unlock()
		return false
	}
	o.queue = append(o.queue, c)
	o.queued += len(c.b)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return true
}

func (o *observer) take() []tapChunk {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.queue
	o.queue, o.queued = nil, 0
	return q
}

// fellBehind is called by the fan-out, under the session's write lock: it
// only marks the observer and bounds its writes; the observer's own
// goroutine says why and closes.
func (o *observer) fellBehind() {
	if o.behindSet.Swap(true) {
		return
	}
	o.ss.setEndReason("observer_fell_behind")
	o.ss.bound(endingGrace)
	close(o.behind)
}

// serveObserver spends the token, upgrades and runs an observer
// connection. Every check common to session tokens (admit) has passed;
// admitObserver does the rest.
func (s *Server) serveObserver(w http.ResponseWriter, r *http.Request, g *grant) {
	obs := s.newSession(g, time.Now())
	defer obs.cancel()
	o := &observer{ss: obs, id: newSessionID(), wake: make(chan struct{}, 1), behind: make(chan struct{})}
	obs.log = obs.log.With("observer_id", o.id)
	if rej := s.admitObserver(o); rej != nil {
		rej.sid = obs.id
		s.refuse(g.ctx, w, r, rej)
		return
	}
	obs.observing = o.target
	defer s.wg.Done()
	leave := func() { o.target.fan.Load().leave(o) }
	if err := s.cfg.Verifier.Consume(g.claims); err != nil {
		leave()
		rej := tokenRejection(err)
		rej.sid = obs.id
		s.refuse(g.ctx, w, r, rej)
		return
	}
	if !s.upgrade(w, r, obs) {
		leave()
		return
	}
	o.run()
}

// run streams the watched session's output to the observer until either
// side ends.
func (o *observer) run() {
	ss, target, cfg := o.ss, o.target, o.ss.cfg
	ss.conn.SetReadLimit(cfg.MaxMessageSize)
	ss.conn.SetCloseHandler(ss.onClientClose)
	ss.out.onCloseFrame = func(n int) { ss.badClose.Store(n == 1) }
	ss.touch()
	stopTimers := ss.startTimers()
	defer stopTimers()
	log := ss.logger()
	log.Info("observer joined", "event", "observe_open", "sub", ss.claims.Subject, "owner_sub", target.claims.Subject,
		"jti", ss.claims.ID, "protocol", ss.proto.name, "remote", ss.conn.RemoteAddr().String())
	var notices sync.WaitGroup
	defer notices.Wait()
	o.notifyOwner(&notices, "is now watching this session (read-only)")

	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		o.readLoop()
	}()

	whole := !target.claims.TTY
	send := func(q []tapChunk) bool {
		for _, c := range q {
			if _, err := ss.writeOutput(c.channel, c.b, whole); err != nil {
				return false
			}
		}
		return true
	}
	ended := false
	for !ended {
		select {
		case <-o.wake:
			if o.behindSet.Load() || !send(o.take()) {
				ended = !o.behindSet.Load()
			}
		case <-target.ctx.Done():
			// Everything the session sent was tapped before its context
			// ended: what is queued is the rest.
			if send(target.fan.Load().leave(o)) && ss.setEndReason("observed_session_ended") {
				ss.bound(endingGrace)
				ss.sendStatusAndClose(&metav1.Status{Status: metav1.StatusSuccess, Message: "the observed session ended"},
					websocket.CloseNormalClosure, "the observed session ended")
			}
			ended = true
		case <-o.behind:
			msg := fmt.Sprintf("observer disconnected: it fell more than %d KiB behind the session's output", observerQueueBytes>>10)
			ss.sendStatusAndClose(&metav1.Status{Status: metav1.StatusFailure, Reason: ObserverFellBehindReason, Message: msg,
				Code: http.StatusTooManyRequests}, websocket.CloseTryAgainLater, msg)
			ended = true
		case <-ss.ctx.Done():
			ended = true
		}
	}
	target.fan.Load().leave(o)
	ss.cancel()
	reason, closeCode := ss.hangUp(readDone)
	o.notifyOwner(&notices, "stopped watching this session")
	log.Info("observer left", "event", "observe_close", "sub", ss.claims.Subject, "bytes_out", ss.bytesOut.Load(),
		"ignored_stdin_bytes", o.ignoredIn.Load(), "ignored_resizes", o.ignoredResizes.Load(),
		"close_code", closeCode, "duration", time.Since(ss.start).String(), "reason", reason)
}

// hangUp waits for the client's close reply (or the close bound), drops
// the connection once the read loop is done, and says how the connection
// ended: the first end reason and the close code the client was sent.
func (ss *session) hangUp(readDone <-chan struct{}) (reason string, closeCode int) {
	wait := time.NewTimer(ss.closeWait())
	select {
	case <-readDone:
	case <-wait.C:
	}
	wait.Stop()
	ss.conn.Close()
	<-readDone
	ss.awaitWriters()
	reason = "unknown"
	if r := ss.endReason.Load(); r != nil {
		reason = *r
	}
	closeCode = int(ss.closeCode.Load())
	if closeCode == 0 {
		closeCode = closeNone
	}
	return reason, closeCode
}

// awaitWriters waits for a write in flight to count its bytes, and stops
// any later one: SPDY's executor returns on cancel without waiting for its
// copies. The connection is closed, so a write in flight fails at once.
func (ss *session) awaitWriters() {
	ss.wmu.Lock()
	ss.closed = true
	ss.wmu.Unlock()
}

// notifyOwner tells the session's user, in their terminal, who joins or
// leaves (--observer-notice). It runs beside the observer: a slow owner
// must not hold up the observer's stream.
func (o *observer) notifyOwner(wg *sync.WaitGroup, what string) {
	if o.ss.cfg.QuietObservers || o.target.ctx.Err() != nil {
		return
	}
	who := o.ss.claims.Subject
	if who == "" {
		who = "an observer"
	}
	n := len(o.target.observers())
	line := fmt.Sprintf("\r\n[k8s-ws-proxy] %s %s; observers now: %d\r\n", shorten(strings.Map(printable, who), 64), what, n)
	wg.Go(func() { o.target.sendNotice(line) })
}

// printable keeps a subject from writing control sequences into the
// owner's terminal.
func printable(r rune) rune {
	if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
		return '?'
	}
	return r
}

// readLoop reads the observer's frames only to count and drop them:
// stdin and resizes are ignored, a close or a dead connection ends it.
func (o *observer) readLoop() {
	ss := o.ss
	for {
		mt, msg, err := ss.conn.ReadMessage()
		if err != nil {
			ss.clientEnded(err)
			return
		}
		ss.extendReadDeadline()
		if (mt == websocket.TextMessage) != ss.proto.base64 {
			ss.setEndReason("protocol_error")
			ss.terminateProtocol(websocket.CloseUnsupportedData, ss.proto.name+" requires other frames")
			return
		}
		f, err := decodeFrame(ss.proto, msg)
		if err != nil {
			if !errors.Is(err, errEmptyFrame) {
				ss.warnOnce("bad_frame", "observer sent an undecodable frame; ignored", "error", err.Error())
			}
			continue
		}
		switch f.channel {
		case chanStdin:
			o.ignoredIn.Add(int64(len(f.payload)))
			ss.warnOnce("observer_stdin", "observer sent stdin; ignored (observers are read-only)")
		case chanResize:
			o.ignoredResizes.Add(1)
			ss.warnOnce("observer_resize", "observer sent a resize; ignored (observers are read-only)")
		}
	}
}
