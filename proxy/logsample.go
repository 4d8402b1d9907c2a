package proxy

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Defaults for how many identical log lines are written.
const (
	DefaultLogBurst    = 20
	DefaultLogInterval = time.Second
)

// logLimiter passes, per key, a burst of lines and then one per interval:
// a token bucket. Keys come from bounded sets (rejection reasons), so the
// map stays small.
type logLimiter struct {
	burst    float64
	interval time.Duration

	mu      sync.Mutex
	buckets map[string]*logBucket
}

type logBucket struct {
	tokens     float64
	last       time.Time
	suppressed int64 // lines refused since the last one passed
}

func newLogLimiter(burst int, interval time.Duration) *logLimiter {
	return &logLimiter{burst: float64(burst), interval: interval, buckets: make(map[string]*logBucket)}
}

// allow reports whether a line for key may be written now and, if so, how
// many were held back since the previous one.
func (l *logLimiter) allow(key string, now time.Time) (bool, int64) {
	if l.burst <= 0 { // disabled
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		b = &logBucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+float64(d)/float64(l.interval))
		b.last = now
	}
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	n := b.suppressed
	b.suppressed = 0
	return true, n
}

// maxSampledKeys bounds the keys a sampledHandler tracks; messages past it
// share one bucket.
const maxSampledKeys = 64

// NewSampledHandler wraps h so that records with the same kind of message
// pass for a burst, then one per interval, like the "session rejected"
// lines; a record that passes after some were dropped carries
// "suppressed". It is for logs whose lines a client can cause at will,
// such as net/http's error log ("http: TLS handshake error from ...": the
// kind is the text before " from " or the first ": ").
func NewSampledHandler(h slog.Handler, burst int, interval time.Duration) slog.Handler {
	return &sampledHandler{h: h, limit: newLogLimiter(burst, interval)}
}

type sampledHandler struct {
	h     slog.Handler
	limit *logLimiter
}

func (s *sampledHandler) Enabled(ctx context.Context, l slog.Level) bool { return s.h.Enabled(ctx, l) }

func (s *sampledHandler) Handle(ctx context.Context, r slog.Record) error {
	key := messageKind(r.Message)
	s.limit.mu.Lock()
	if _, ok := s.limit.buckets[key]; !ok && len(s.limit.buckets) >= maxSampledKeys {
		key = "other"
	}
	s.limit.mu.Unlock()
	ok, suppressed := s.limit.allow(key, time.Now())
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int64("suppressed", suppressed))
	}
	return s.h.Handle(ctx, r)
}

func (s *sampledHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &sampledHandler{h: s.h.WithAttrs(as), limit: s.limit}
}

func (s *sampledHandler) WithGroup(name string) slog.Handler {
	return &sampledHandler{h: s.h.WithGroup(name), limit: s.limit}
}

// messageKind is the fixed part of a net/http error message.
func messageKind(msg string) string {
	rest := strings.TrimPrefix(msg, "http: ")
	if i := strings.Index(rest, " from "); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.Index(rest, ": "); i >= 0 {
		rest = rest[:i]
	}
	if len(rest) > 64 {
		rest = rest[:64]
	}
	return rest
}
