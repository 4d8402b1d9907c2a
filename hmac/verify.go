package hmac

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// DefaultLeeway is the clock skew tolerated on exp, nbf and iat.
	DefaultLeeway = 30 * time.Second
	// DefaultMaxTTL is the longest a token may be valid (exp - iat).
	DefaultMaxTTL = 5 * time.Minute
)

// Reason is why a token was rejected: a stable snake_case string, used
// as a log field and a metric label. Never rename one.
type Reason string

// The rejection reasons.
const (
	ReasonMalformed       Reason = "malformed"         // not a well-formed compact JWS/JWT
	ReasonBadAlgorithm    Reason = "bad_algorithm"     // alg is not HS256
	ReasonMissingKID      Reason = "missing_kid"       // no kid in the header
	ReasonUnknownKey      Reason = "unknown_key"       // kid names no key we hold (or one past its grace)
	ReasonBadSignature    Reason = "bad_signature"     // MAC does not match
	ReasonExpired         Reason = "expired"           // now >= exp + leeway
	ReasonNotYetValid     Reason = "not_yet_valid"     // now < nbf - leeway, or iat in the future
	ReasonWrongAudience   Reason = "wrong_audience"    // aud does not contain our audience
	ReasonMissingClaim    Reason = "missing_claim"     // exp, aud, jti, namespace or pod absent
	ReasonTTLTooLong      Reason = "ttl_too_long"      // exp too far after iat (or now)
	ReasonReplayed        Reason = "replayed"          // jti already used
	ReasonReplayCacheFull Reason = "replay_cache_full" // too many live jtis to remember one more
	// ReasonUnknown is what ReasonOf says about an error that did not come
	// from a Verifier; Verify itself never produces it.
	ReasonUnknown Reason = "unknown"
)

// Error is a token rejection. Its message names the reason and the detail
// but never contains the token, so it is safe to log.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return "token rejected: " + string(e.Reason)
	}
	return "token rejected: " + string(e.Reason) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

func reject(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the Reason of a rejection, "" for nil, and
// ReasonUnknown for an error that is not an *Error.
func ReasonOf(err error) Reason {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonUnknown
}

// VerifierOptions configures a Verifier. Zero values select the defaults.
type VerifierOptions struct {
	Keys           KeySource        // required; a *Keyring in production
	Audience       string           // "" => DefaultAudience
	Leeway         time.Duration    // 0 => DefaultLeeway
	MaxTTL         time.Duration    // 0 => DefaultMaxTTL
	ReplayCapacity int              // 0 => DefaultReplayCapacity
	Now            func() time.Time // nil => time.Now
}

// Verifier checks tokens and enforces single use. It is safe for concurrent
// use; the replay cache is per Verifier, so a proxy must use one Verifier
// for all its connections.
type Verifier struct {
	keys     KeySource
	audience string
	leeway   time.Duration
	maxTTL   time.Duration
	now      func() time.Time
	parser   *jwt.Parser
	replay   *replayCache
}

// NewVerifier returns a Verifier configured by opts.
func NewVerifier(opts VerifierOptions) (*Verifier, error) {
	if opts.Keys == nil {
		return nil, errors.New("hmac: VerifierOptions.Keys is required")
	}
	opts.Audience = cmp.Or(opts.Audience, DefaultAudience)
	opts.Leeway = cmp.Or(opts.Leeway, DefaultLeeway)
	opts.MaxTTL = cmp.Or(opts.MaxTTL, DefaultMaxTTL)
	opts.ReplayCapacity = cmp.Or(opts.ReplayCapacity, DefaultReplayCapacity)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch {
	case opts.Leeway < 0:
		return nil, errors.New("hmac: negative leeway")
	case opts.MaxTTL < 0:
		return nil, errors.New("hmac: negative max TTL")
	case opts.MaxTTL > 24*time.Hour:
		// A session token is a one-shot credential; a day is already absurd,
		// and the replay cache's ring is sized by it.
		return nil, errors.New("hmac: max TTL over 24h")
	case opts.Leeway > time.Hour:
		return nil, errors.New("hmac: leeway over 1h")
	case opts.ReplayCapacity < 0:
		return nil, errors.New("hmac: negative replay capacity")
	}
	v := &Verifier{
		keys:     opts.Keys,
		audience: opts.Audience,
		leeway:   opts.Leeway,
		maxTTL:   opts.MaxTTL,
		now:      opts.Now,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{algorithm}),
			jwt.WithStrictDecoding(), // padding is refused by default; strict refuses non-canonical trailing bits
			jwt.WithExpirationRequired(),
			jwt.WithAudience(opts.Audience),
			jwt.WithLeeway(opts.Leeway),
			jwt.WithIssuedAt(),
			jwt.WithTimeFunc(opts.Now),
		),
	}
	// A valid token is forgotten at most exp + leeway, and exp is at most
	// iat + maxTTL with iat at most now + leeway (or, without iat, at most
	// now + maxTTL + leeway).
	v.replay = newReplayCache(opts.ReplayCapacity, opts.MaxTTL+2*opts.Leeway)
	return v, nil
}

// Verify checks token and, if it is valid, consumes its jti: the same token
// is refused as ReasonReplayed from then on, until it has expired anyway.
// The returned error is an *Error (see ReasonOf).
func (v *Verifier) Verify(token string) (*Claims, error) { return v.verify(token, v.replay.consume) }

// Check verifies token without consuming it: signature, algorithm, key,
// times, audience, required claims, and that its jti has not been consumed
// yet (ReasonReplayed). A caller that has more checks of its own (scope,
// node, pod, limits) makes them after Check and calls Consume only once
// they all passed, so a request refused for any other reason does not
// spend the token. The returned error is an *Error (see ReasonOf).
func (v *Verifier) Check(token string) (*Claims, error) {
	return v.verify(token, func(jti string, _, now time.Time) Reason {
		if v.replay.contains(jti, now) {
			return ReasonReplayed
		}
		return ""
	})
}

// Consume spends the jti of claims that Check returned: it succeeds for
// exactly one caller per jti, however many race, and refuses the others
// with ReasonReplayed (or ReasonReplayCacheFull when no more jtis can be
// remembered, or ReasonExpired when the token expired since Check).
func (v *Verifier) Consume(c *Claims) error {
	if c == nil || c.ID == "" || c.ExpiresAt == nil {
		return reject(ReasonMissingClaim, "claims without jti or exp cannot be consumed")
	}
	now := v.now()
	forget := c.ExpiresAt.Add(v.leeway)
	if !now.Before(forget) {
		return reject(ReasonExpired, "token expired before it was used")
	}
	if r := v.replay.consume(c.ID, forget, now); r != "" {
		return &Error{Reason: r}
	}
	return nil
}

// verify checks token and hands its jti to record, whose refusal refuses the
// token: Verify consumes it, Peek only looks.
func (v *Verifier) verify(token string, record func(jti string, forgetAt, now time.Time) Reason) (*Claims, error) {
	now := v.now()
	c := new(Claims)
	if err := v.parse(v.parser, token, c, now); err != nil {
		return nil, err
	}

	// Claims the library does not know about or does not require.
	switch {
	case c.ID == "":
		return nil, reject(ReasonMissingClaim, "jti claim is required")
	case c.Namespace == "":
		return nil, reject(ReasonMissingClaim, "namespace claim is required")
	case c.Pod == "":
		return nil, reject(ReasonMissingClaim, "pod claim is required")
	}
	exp := c.ExpiresAt.Time
	if c.IssuedAt != nil {
		if ttl := exp.Sub(c.IssuedAt.Time); ttl > v.maxTTL {
			return nil, reject(ReasonTTLTooLong, "exp - iat = %s, max %s", ttl, v.maxTTL)
		}
	} else if ttl := exp.Sub(now); ttl > v.maxTTL+v.leeway {
		return nil, reject(ReasonTTLTooLong, "no iat and exp is %s away, max %s", ttl, v.maxTTL+v.leeway)
	}

	if r := record(c.ID, exp.Add(v.leeway), now); r != "" {
		return nil, &Error{Reason: r}
	}
	return c, nil
}

// parse checks token's syntax, verifies its signature with the key v holds
// for it at now and decodes its claims into c, with p's checks.
func (v *Verifier) parse(p *jwt.Parser, token string, c jwt.Claims, now time.Time) *Error {
	if len(token) > MaxTokenLen {
		return reject(ReasonMalformed, "token is %d bytes, longer than %d", len(token), MaxTokenLen)
	}
	// The library splits on '.' and decodes strictly, but encoding/base64
	// skips '\r' and '\n'; check the alphabet so that exactly one string
	// maps to each token.
	if strings.Count(token, ".") != 2 {
		return reject(ReasonMalformed, "token does not have exactly 3 segments")
	}
	for i := 0; i < len(token); i++ {
		if b := token[i]; b != '.' && !isBase64URL(token[i:i+1]) {
			return reject(ReasonMalformed, "byte %d is not in the base64url alphabet", i)
		}
	}
	tok, err := p.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		return v.key(t, now)
	})
	if err != nil {
		return classify(tok, err)
	}
	return nil
}

// key is the jwt.Keyfunc: header checks the library does not do, then the
// lookup by kid.
func (v *Verifier) key(t *jwt.Token, now time.Time) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 4.1.11: extensions we do not understand must be refused.
		return nil, reject(ReasonMalformed, "crit header is not supported")
	}
	if typ, ok := t.Header["typ"]; ok {
		if s, _ := typ.(string); !strings.EqualFold(s, "JWT") {
			return nil, reject(ReasonMalformed, "typ header must be JWT when present")
		}
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, reject(ReasonMissingKID, "header has no kid")
	}
	key, ok := v.keys.Lookup(kid, now)
	if !ok || len(key) < MinKeyLen {
		if len(kid) > 32 { // a kid is 16 hex digits; do not echo junk at length
			kid = kid[:32] + "..."
		}
		return nil, reject(ReasonUnknownKey, "no key with kid %q", kid)
	}
	return key, nil
}

// classify maps a golang-jwt error to a Reason. When several claims fail at
// once the first in this order wins: missing, audience, expired, not yet
// valid.
func classify(tok *jwt.Token, err error) *Error {
	var e *Error
	if errors.As(err, &e) { // from our Keyfunc
		return e
	}
	r := ReasonMalformed
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// The library only says this (outside our Keyfunc) when alg is
		// missing or names no algorithm it knows.
		r = ReasonBadAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		r = ReasonBadSignature
		if !errors.Is(err, jwt.ErrSignatureInvalid) || tok == nil || tok.Method == nil || tok.Method.Alg() != algorithm {
			r = ReasonBadAlgorithm // refused by WithValidMethods, before any MAC was computed
		}
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		r = ReasonMissingClaim
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		r = ReasonWrongAudience
	case errors.Is(err, jwt.ErrTokenExpired):
		r = ReasonExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		r = ReasonNotYetValid
	}
	return &Error{Reason: r, Err: err}
}
