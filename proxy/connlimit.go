package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ConnLimiter bounds the connections of one http.Server that are not (or
// not yet) sessions: requests in flight, keep-alive connections between
// requests, TLS handshakes. An upgraded session leaves the count (the
// session limit bounds those), so a client cannot hold the process's file
// descriptors with cheap requests. Use Listener on the raw listener and
// ConnState as the server's ConnState hook.
type ConnLimiter struct {
	name    string
	max     int64
	open    atomic.Int64
	log     *slog.Logger
	limit   *logLimiter
	refused metric.Int64Counter
}

// NewConnLimiter returns a limiter of max connections for the server
// called name (a metric label: "sessions" or "health"). A nil mp uses the
// OpenTelemetry global.
func NewConnLimiter(name string, max int, log *slog.Logger, mp metric.MeterProvider) (*ConnLimiter, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if log == nil {
		log = slog.Default()
	}
	refused, err := mp.Meter(instrumentationName).Int64Counter("k8s_ws_proxy.connections.refused",
		metric.WithDescription("Connections closed at once because the server already held its limit of connections that are not sessions, by server."))
	if err != nil {
		return nil, err
	}
	return &ConnLimiter{name: name, max: int64(max), log: log, limit: newLogLimiter(DefaultLogBurst, DefaultLogInterval), refused: refused}, nil
}

// Open is how many counted connections are open.
func (l *ConnLimiter) Open() int { return int(l.open.Load()) }

// Listener counts every accepted connection and closes, before the HTTP
// server sees it (no TLS handshake, no error log line), any beyond the
// limit.
func (l *ConnLimiter) Listener(ln net.Listener) net.Listener { return &limitedListener{ln, l} }

// ConnState releases a connection's place once it is hijacked (an upgraded
// session) or closed.
func (l *ConnLimiter) ConnState(_ net.Conn, st http.ConnState) {
	if st == http.StateHijacked || st == http.StateClosed {
		l.open.Add(-1)
	}
}

type limitedListener struct {
	net.Listener
	l *ConnLimiter
}

func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l := ll.l
		if l.max <= 0 || l.open.Add(1) <= l.max {
			if l.max <= 0 {
				l.open.Add(1)
			}
			return c, nil
		}
		l.open.Add(-1)
		_ = c.Close()
		l.refused.Add(context.Background(), 1, metric.WithAttributes(attribute.String("server", l.name)))
		if ok, suppressed := l.limit.allow("too_many_connections", time.Now()); ok {
			l.log.Warn("connection refused", "event", "rejected", "reason", "too_many_connections",
				"server", l.name, "limit", l.max, "remote", c.RemoteAddr().String(), "suppressed", suppressed)
		}
	}
}
