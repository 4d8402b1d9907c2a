package proxy

import (
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
