package proxy

import (
	"bufio"
	"container/list"
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ConnLimiter bounds the connections of one http.Server that are not (or
// not yet) sessions: TLS handshakes, requests being read or served,
// keep-alive connections between requests. An upgraded session leaves the
// count (the session limit bounds those), and so does a connection while
// its request is in a session's admission (Server.MaxAdmissions bounds
// those, and answers the excess with a Status): a request that has arrived
// whole is answered, never closed to make room. So a client cannot hold
// the process's file descriptors with cheap or header-less connections.
// At the limit a new connection is accepted and the counted one that has
// waited longest (since its accept, or since its last request arrived) is
// closed: refusing the new one instead would let anyone who holds the
// limit's worth of stalled connections lock every real client out. Use
// Listener on the raw listener, and ConnState and ConnContext as the
// server's hooks of those names.
type ConnLimiter struct {
	name    string
	max     int
	log     *slog.Logger
	limit   *logLimiter
	evicted metric.Int64Counter

	mu    sync.Mutex
	conns *list.List // of *trackedConn, oldest first
}

// NewConnLimiter returns a limiter of max connections (0: no limit, only
// counting) for the server called name (a metric label: "sessions" or
// "health"). A nil mp uses the OpenTelemetry global.
func NewConnLimiter(name string, max int, log *slog.Logger, mp metric.MeterProvider) (*ConnLimiter, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if log == nil {
		log = slog.Default()
	}
	evicted, err := mp.Meter(instrumentationName).Int64Counter("k8s_ws_proxy.connections.evicted",
		metric.WithDescription("Connections that were not sessions, closed to make room for a new one at the server's limit, by server."))
	if err != nil {
		return nil, err
	}
	return &ConnLimiter{name: name, max: max, log: log, limit: newLogLimiter(DefaultLogBurst, DefaultLogInterval),
		evicted: evicted, conns: list.New()}, nil
}

// Open is how many counted connections are open.
func (l *ConnLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns.Len()
}

// Listener counts every accepted connection and, past the limit, closes
// the oldest counted one.
func (l *ConnLimiter) Listener(ln net.Listener) net.Listener { return &limitedListener{ln, l} }

// ConnState releases a connection's place once it is hijacked (an upgraded
// session) or closed. A connection whose request has just been read whole
// becomes the newest: it is not the one evicted while its handler starts
// (a session request leaves the count then), the oldest stalled one is.
func (l *ConnLimiter) ConnState(c net.Conn, st http.ConnState) {
	tc := tracked(c)
	if tc == nil {
		return
	}
	switch st {
	case http.StateActive:
		l.mu.Lock()
		if tc.elem != nil {
			l.conns.MoveToBack(tc.elem)
		}
		l.mu.Unlock()
	case http.StateHijacked, http.StateClosed:
		l.release(tc)
	}
}

// ConnContext puts the connection in its requests' contexts, where a
// handler that admits a session finds it (uncountAdmitted).
func (l *ConnLimiter) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc := tracked(c); tc != nil {
		return context.WithValue(ctx, trackedKey{}, trackedRef{l, tc})
	}
	return ctx
}

func tracked(c net.Conn) *trackedConn {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		c = nc.NetConn()
	}
	tc, _ := c.(*trackedConn)
	return tc
}

type trackedKey struct{}

type trackedRef struct {
	l  *ConnLimiter
	tc *trackedConn
}

// uncountAdmitted takes the connection of ctx's request out of the count
// while the request is in admission: it has arrived whole, and closing it
// now would leave an authenticated client without an answer. recount puts
// it back (as the newest) unless it was hijacked or closed meanwhile; the
// request's handler calls it once admission is over. Without a limiter
// in ctx (tests' servers) both are no-ops.
func uncountAdmitted(ctx context.Context) (recount func()) {
	ref, ok := ctx.Value(trackedKey{}).(trackedRef)
	if !ok {
		return func() {}
	}
	l, tc := ref.l, ref.tc
	l.mu.Lock()
	if tc.elem != nil {
		l.conns.Remove(tc.elem)
		tc.elem = nil
	}
	l.mu.Unlock()
	return sync.OnceFunc(func() {
		l.mu.Lock()
		var oldest *trackedConn
		if !tc.done && tc.elem == nil {
			oldest = l.countLocked(tc)
		}
		l.mu.Unlock()
		l.evict(oldest)
	})
}

func (l *ConnLimiter) release(tc *trackedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tc.done = true
	if tc.elem != nil {
		l.conns.Remove(tc.elem)
		tc.elem = nil
	}
}

// countLocked counts tc as the newest connection and, past the limit,
// takes the oldest out of the count for the caller to evict.
func (l *ConnLimiter) countLocked(tc *trackedConn) (oldest *trackedConn) {
	tc.elem = l.conns.PushBack(tc)
	if l.max > 0 && l.conns.Len() > l.max {
		oldest = l.conns.Remove(l.conns.Front()).(*trackedConn)
		oldest.elem, oldest.done = nil, true
	}
	return oldest
}

// evict closes a connection countLocked took out (nil: none), counted and
// logged.
func (l *ConnLimiter) evict(oldest *trackedConn) {
	if oldest == nil {
		return
	}
	_ = oldest.Conn.Close()
	l.evicted.Add(context.Background(), 1, metric.WithAttributes(attribute.String("server", l.name)))
	if ok, suppressed := l.limit.allow("too_many_connections", time.Now()); ok {
		l.log.Warn("connection evicted", "event", "rejected", "reason", "too_many_connections",
			"server", l.name, "limit", l.max, "remote", oldest.RemoteAddr().String(), "suppressed", suppressed)
	}
}

type trackedConn struct {
	net.Conn
	// Under ConnLimiter.mu: elem is nil while the connection is not
	// counted (in admission, or released); done once it is hijacked or
	// closed, when it is never counted again.
	elem *list.Element
	done bool
}

type limitedListener struct {
	net.Listener
	l *ConnLimiter
}

func (ll *limitedListener) Accept() (net.Conn, error) {
	c, err := ll.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l := ll.l
	tc := &trackedConn{Conn: c}
	l.mu.Lock()
	oldest := l.countLocked(tc)
	l.mu.Unlock()
	l.evict(oldest)
	return tc, nil
}

// enterAdmission starts the admission of a request that may wait on the
// API server (pod lookup, access review, recording): it takes one of
// MaxAdmissions' places and takes the connection out of the pending count
// (uncountAdmitted). Past the limit the request gets 429 with Retry-After,
// as the API server's max-in-flight filter answers, and its token is not
// spent. leave ends the admission; the returned writer calls it as soon as
// the connection is hijacked (the upgrade), since the session's handler
// runs on for the session's life. Call leave when the handler returns.
func (s *Server) enterAdmission(w http.ResponseWriter, r *http.Request) (_ http.ResponseWriter, leave func(), _ *rejection) {
	if s.admitting.Add(1) > int64(s.cfg.MaxAdmissions) {
		s.admitting.Add(-1)
		rej := reject(http.StatusTooManyRequests, "too_many_admissions",
			"the proxy is admitting its limit of %d requests at once; retry shortly", s.cfg.MaxAdmissions)
		rej.retryAfter = 1
		return w, func() {}, rej
	}
	recount := uncountAdmitted(r.Context())
	leave = sync.OnceFunc(func() {
		s.admitting.Add(-1)
		recount()
	})
	return &admissionWriter{ResponseWriter: w, leave: leave}, leave, nil
}

// admissionWriter ends its request's admission once the connection is
// hijacked: net/http has then released it from the pending count
// (StateHijacked), so recount has nothing to put back.
type admissionWriter struct {
	http.ResponseWriter
	leave func()
}

func (w *admissionWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.leave()
	}
	return c, brw, err
}

func (w *admissionWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
