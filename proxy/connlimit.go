package proxy

import (
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
// not yet) sessions: requests in flight, keep-alive connections between
// requests, TLS handshakes. An upgraded session leaves the count (the
// session limit bounds those), so a client cannot hold the process's file
// descriptors with cheap requests. At the limit a new connection is
// accepted and the oldest counted one is closed: refusing the new one
// instead would let anyone who holds the limit's worth of stalled
// connections lock every real client out. Use Listener on the raw
// listener and ConnState as the server's ConnState hook.
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
// session) or closed.
func (l *ConnLimiter) ConnState(c net.Conn, st http.ConnState) {
	if st != http.StateHijacked && st != http.StateClosed {
		return
	}
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		c = nc.NetConn()
	}
	if tc, ok := c.(*trackedConn); ok {
		l.release(tc)
	}
}

func (l *ConnLimiter) release(tc *trackedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if tc.elem != nil {
		l.conns.Remove(tc.elem)
		tc.elem = nil
	}
}

type trackedConn struct {
	net.Conn
	elem *list.Element // under ConnLimiter.mu; nil once released
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
	var oldest *trackedConn
	l.mu.Lock()
	tc.elem = l.conns.PushBack(tc)
	if l.max > 0 && l.conns.Len() > l.max {
		oldest = l.conns.Remove(l.conns.Front()).(*trackedConn)
		oldest.elem = nil
	}
	l.mu.Unlock()
	if oldest != nil {
		_ = oldest.Conn.Close()
		l.evicted.Add(context.Background(), 1, metric.WithAttributes(attribute.String("server", l.name)))
		if ok, suppressed := l.limit.allow("too_many_connections", time.Now()); ok {
			l.log.Warn("connection evicted", "event", "rejected", "reason", "too_many_connections",
				"server", l.name, "limit", l.max, "remote", oldest.RemoteAddr().String(), "suppressed", suppressed)
		}
	}
	return tc, nil
}
