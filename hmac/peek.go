package hmac

import (
	"crypto/sha256"
	"time"
)

// Peek checks token exactly as Verify does but does not consume it, and
// reports whether it has already been consumed. It serves the requests a
// client makes before it uses the token (kubectl's GET of the pod) and the
// explanation of an earlier refusal (client-go's SPDY retry), neither of
// which may use up a single-use token. The error is an *Error (see
// ReasonOf); used is false when err is not nil.
func (v *Verifier) Peek(token string) (c *Claims, used bool, err error) {
	c, err = v.verify(token, func(jti string, _, now time.Time) Reason {
		used = v.replay.contains(jti, now)
		return ""
	})
	if err != nil {
		return nil, false, err
	}
	return c, used, nil
}

// contains reports whether jti is remembered as consumed, forgetting the
// expired entries first as consume does.
func (r *replayCache) contains(jti string, now time.Time) bool {
	sum := sha256.Sum256([]byte(jti))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(now.Unix())
	_, ok := r.seen[jtiKey(sum[:16])]
	return ok
}
