package hmac

import (
	"crypto/sha256"
	"sync"
	"time"
)

// DefaultReplayCapacity is how many unexpired jtis a Verifier remembers by
// default. At the default 5-minute maximum TTL it allows a sustained 300
// new sessions per second per proxy, far above what one node hosts.
const DefaultReplayCapacity = 100_000

// jtiKey is what the replay cache stores instead of the jti itself: 128 bits
// of SHA-256 are collision-free for any realistic number of tokens, and a
// fixed-size key keeps the cost per remembered token small and independent
// of how long the minter made its jtis.
type jtiKey [16]byte

// replayCache remembers consumed jtis until their tokens could no longer
// verify anyway (exp + leeway) and forgets them then, not earlier. It is
// bounded, and when full it refuses rather than forgetting early: forgetting
// a live jti would let its token be replayed.
//
// Expiry is tracked in a ring of one-second buckets spanning the longest
// lifetime a valid token can have, so both the check and the eviction are
// O(1) amortised (no heap, no scan).
type replayCache struct {
	mu       sync.Mutex
	capacity int
	seen     map[jtiKey]struct{}
	peak     int // high-water mark of len(seen) since the map was last rebuilt
	// ring[s % len(ring)] holds the keys to forget at the start of unix
	// second s, for s in [base, base+len(ring)).
	ring    [][]jtiKey
	base    int64
	started bool
}

// newReplayCache returns a cache for tokens whose forget time is at most span
// after the moment they are checked.
func newReplayCache(capacity int, span time.Duration) *replayCache {
	// +3: one for rounding the forget time up to a whole second, one for the
	// current second, one so a bucket is never reused while still live.
	n := int(span/time.Second) + 3
	return &replayCache{
		capacity: capacity,
		seen:     make(map[jtiKey]struct{}),
		ring:     make([][]jtiKey, n),
	}
}

// consume records jti as used until forgetAt. It returns "" if the jti was
// new, ReasonReplayed if it was seen before, ReasonReplayCacheFull if it is
// new but the cache has no room.
func (r *replayCache) consume(jti string, forgetAt, now time.Time) Reason {
	sum := sha256.Sum256([]byte(jti))
	key := jtiKey(sum[:16])
	// Round up: the entry must outlive forgetAt, never the reverse.
	f := forgetAt.Unix()
	if forgetAt.Nanosecond() > 0 {
		f++
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(now.Unix())
	if _, ok := r.seen[key]; ok {
		return ReasonReplayed
	}
	if len(r.seen) >= r.capacity {
		return ReasonReplayCacheFull
	}
	if f < r.base {
		// The clock went backwards since the last eviction: keep the entry
		// at least as long as the oldest live bucket.
		f = r.base
	}
	if f >= r.base+int64(len(r.ring)) {
		// The Verifier never lets such a token through (ttl_too_long);
		// refusing is the only safe answer if one ever arrives.
		return ReasonTTLTooLong
	}
	i := r.slot(f)
	r.ring[i] = append(r.ring[i], key)
	r.seen[key] = struct{}{}
	if len(r.seen) > r.peak {
		r.peak = len(r.seen)
	}
	return ""
}

// advance forgets every entry whose forget second is <= now.
func (r *replayCache) advance(now int64) {
	if !r.started {
		r.base, r.started = now+1, true
		return
	}
	if now < r.base {
		return
	}
	n := int64(len(r.ring))
	last := now
	if now-r.base >= n { // a long idle gap: every bucket is stale
		last = r.base + n - 1
	}
	for s := r.base; s <= last; s++ {
		i := r.slot(s)
		b := r.ring[i]
		for _, k := range b {
			delete(r.seen, k)
		}
		if cap(b) > 256 {
			r.ring[i] = nil // give a burst's memory back
		} else {
			r.ring[i] = b[:0]
		}
	}
	r.base = now + 1
	// Go maps never shrink; after a burst, rebuild so the memory goes back.
	if r.peak > 4096 && len(r.seen) < r.peak/4 {
		m := make(map[jtiKey]struct{}, len(r.seen))
		for k := range r.seen {
			m[k] = struct{}{}
		}
		r.seen, r.peak = m, len(m)
	}
}

// slot maps a unix second to its bucket (also for seconds before 1970).
func (r *replayCache) slot(s int64) int {
	n := int64(len(r.ring))
	return int((s%n + n) % n)
}

// len returns the number of remembered jtis.
func (r *replayCache) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}
