package hmac

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Admin tokens authorise calls to the proxy's admin API. They are signed
// with the same keyring as session tokens but carry their own audience, so
// neither kind is ever accepted as the other.
const (
	// AdminAudience is the aud every admin token carries.
	AdminAudience = "k8s-ws-proxy-admin"
	// DefaultAdminTTL is the lifetime SignAdmin gives a token without exp.
	DefaultAdminTTL = time.Minute
	// DefaultAdminMaxTTL is the longest an admin token may be valid: admin
	// tokens are not single-use (docs/admin.md), so their life is short.
	DefaultAdminMaxTTL = 5 * time.Minute
)

// The admin scopes, space-separated in the scope claim (RFC 8693 style).
const (
	ScopeSessionsList   = "sessions:list"
	ScopeSessionsRevoke = "sessions:revoke"
)

// AdminClaims is the payload of an admin token.
type AdminClaims struct {
	jwt.RegisteredClaims // iss, sub, aud, exp, nbf, iat, jti

	// Scope is a space-separated list of the calls the token allows.
	Scope string `json:"scope"`
}

// Scopes returns the scope claim's entries.
func (c *AdminClaims) Scopes() []string { return strings.Fields(c.Scope) }

// HasScope reports whether the token allows scope.
func (c *AdminClaims) HasScope(scope string) bool { return slices.Contains(c.Scopes(), scope) }

// adminWire fixes the member order of an admin token's payload.
type adminWire struct {
	registeredWire
	Scope string `json:"scope"`
}

// SignAdmin returns an admin token for c. Defaults as for Sign, with
// aud = AdminAudience and exp = iat + DefaultAdminTTL. The scope must name
// at least one scope, and aud may hold nothing but AdminAudience: a token
// that is also a session token's audience would be both.
func (s *Signer) SignAdmin(c AdminClaims) (string, error) {
	if len(c.Scopes()) == 0 {
		return "", errors.New("hmac: admin claims need a scope")
	}
	for _, v := range append([]string{c.Issuer, c.Subject, c.ID, c.Scope}, c.Audience...) {
		if !utf8.ValidString(v) {
			return "", errors.New("hmac: claim is not valid UTF-8")
		}
	}
	withDefaults(&c.RegisteredClaims, AdminAudience, DefaultAdminTTL)
	if len(c.Audience) != 1 || c.Audience[0] != AdminAudience {
		return "", fmt.Errorf("hmac: an admin token's audience must be exactly %q", AdminAudience)
	}
	payload, err := compactJSON(adminWire{registeredWire: newRegisteredWire(c.RegisteredClaims), Scope: c.Scope})
	if err != nil {
		return "", fmt.Errorf("hmac: encoding claims: %w", err)
	}
	return s.sign(payload)
}

// ReasonMissingScope: an admin token without a scope claim.
const ReasonMissingScope Reason = "missing_scope"

// AdminVerifierOptions configures an AdminVerifier. Zero values select the
// defaults.
type AdminVerifierOptions struct {
	Keys   KeySource        // required; the same *Keyring as the session verifier
	Leeway time.Duration    // 0 => DefaultLeeway
	MaxTTL time.Duration    // 0 => DefaultAdminMaxTTL
	Now    func() time.Time // nil => time.Now
}

// AdminVerifier checks admin tokens. Unlike Verifier it keeps no replay
// cache: an admin token may be used until it expires (docs/admin.md).
type AdminVerifier struct {
	keys   *Verifier // only its key lookup is used
	leeway time.Duration
	maxTTL time.Duration
	now    func() time.Time
	parser *jwt.Parser
}

// NewAdminVerifier returns an AdminVerifier configured by opts.
func NewAdminVerifier(opts AdminVerifierOptions) (*AdminVerifier, error) {
	if opts.Keys == nil {
		return nil, errors.New("hmac: AdminVerifierOptions.Keys is required")
	}
	opts.Leeway = cmp.Or(opts.Leeway, DefaultLeeway)
	opts.MaxTTL = cmp.Or(opts.MaxTTL, DefaultAdminMaxTTL)
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch {
	case opts.Leeway < 0 || opts.Leeway > time.Hour:
		return nil, errors.New("hmac: admin leeway must be within [0, 1h]")
	case opts.MaxTTL < 0 || opts.MaxTTL > time.Hour:
		// Not single-use: an hour-long admin token would be a standing
		// credential.
		return nil, errors.New("hmac: admin max TTL must be within [0, 1h]")
	}
	return &AdminVerifier{
		keys:   &Verifier{keys: opts.Keys},
		leeway: opts.Leeway,
		maxTTL: opts.MaxTTL,
		now:    opts.Now,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{algorithm}),
			jwt.WithStrictDecoding(),
			jwt.WithExpirationRequired(),
			jwt.WithAudience(AdminAudience),
			jwt.WithLeeway(opts.Leeway),
			jwt.WithIssuedAt(),
			jwt.WithTimeFunc(opts.Now),
		),
	}, nil
}

// Verify checks an admin token. The error is an *Error (see ReasonOf); a
// session token is refused as ReasonWrongAudience.
func (v *AdminVerifier) Verify(token string) (*AdminClaims, error) {
	c := new(AdminClaims)
	if err := v.keys.parse(v.parser, token, c, v.now()); err != nil {
		return nil, err
	}
	if c.IssuedAt == nil {
		return nil, reject(ReasonMissingClaim, "iat claim is required in an admin token")
	}
	if ttl := c.ExpiresAt.Sub(c.IssuedAt.Time); ttl > v.maxTTL {
		return nil, reject(ReasonTTLTooLong, "exp - iat = %s, max %s", ttl, v.maxTTL)
	}
	if len(c.Scopes()) == 0 {
		return nil, reject(ReasonMissingScope, "admin token has no scope")
	}
	return c, nil
}
