package hmac

import (
	"fmt"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func newTestAdminVerifier(t *testing.T) *AdminVerifier {
	t.Helper()
	v, err := NewAdminVerifier(AdminVerifierOptions{Keys: StaticKeys(keyA), Now: fixedNow(t0)})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func adminClaims(scope string) AdminClaims {
	return AdminClaims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "control-plane",
			IssuedAt: jwt.NewNumericDate(t0.Add(-time.Second)), ExpiresAt: jwt.NewNumericDate(t0.Add(time.Minute))},
		Scope: scope,
	}
}

func mustSignAdmin(t *testing.T, key []byte, c AdminClaims) string {
	t.Helper()
	return must(mustSigner(t, key).SignAdmin(c))(t)
}

func TestAdminTokenRoundTripAndReuse(t *testing.T) {
	v := newTestAdminVerifier(t)
	tok := mustSignAdmin(t, keyA, adminClaims("sessions:list sessions:revoke"))
	// Not single-use: the same token verifies again (docs/admin.md).
	for range 2 {
		c, err := v.Verify(tok)
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject != "control-plane" || !c.HasScope(ScopeSessionsList) || !c.HasScope(ScopeSessionsRevoke) || c.HasScope("sessions") {
			t.Fatalf("claims %+v", c)
		}
	}
}

func TestAdminTokenRefusals(t *testing.T) {
	v := newTestAdminVerifier(t)
	signer, _ := NewSigner(keyA)
	session, err := signer.Sign(Claims{RegisteredClaims: jwt.RegisteredClaims{
		IssuedAt: jwt.NewNumericDate(t0), ExpiresAt: jwt.NewNumericDate(t0.Add(time.Minute))}, Namespace: "n", Pod: "p"})
	if err != nil {
		t.Fatal(err)
	}
	long := adminClaims(ScopeSessionsList)
	long.ExpiresAt = jwt.NewNumericDate(t0.Add(time.Hour))
	expired := adminClaims(ScopeSessionsList)
	expired.IssuedAt = jwt.NewNumericDate(t0.Add(-3 * time.Minute))
	expired.ExpiresAt = jwt.NewNumericDate(t0.Add(-2 * time.Minute))
	// An admin token for the session audience cannot even be minted; a
	// hand-made one with an admin payload but no scope is refused.
	iat, exp := t0.Unix(), t0.Add(time.Minute).Unix()
	noScope := rawToken(keyA, hdr(keyA), fmt.Sprintf(`{"aud":%q,"iat":%d,"exp":%d,"jti":"j"}`, AdminAudience, iat, exp))
	emptyScope := rawToken(keyA, hdr(keyA), fmt.Sprintf(`{"aud":%q,"iat":%d,"exp":%d,"scope":" "}`, AdminAudience, iat, exp))
	noIat := rawToken(keyA, hdr(keyA), fmt.Sprintf(`{"aud":%q,"exp":%d,"scope":"sessions:list"}`, AdminAudience, exp))
	wrongAud := rawToken(keyA, hdr(keyA), fmt.Sprintf(`{"aud":%q,"iat":%d,"exp":%d,"scope":"sessions:list"}`, DefaultAudience, iat, exp))
	for name, tc := range map[string]struct {
		token string
		want  Reason
	}{
		"session token":  {session, ReasonWrongAudience},
		"wrong audience": {wrongAud, ReasonWrongAudience},
		"no scope":       {noScope, ReasonMissingScope},
		"empty scope":    {emptyScope, ReasonMissingScope},
		"other key":      {mustSignAdmin(t, keyB, adminClaims(ScopeSessionsList)), ReasonUnknownKey},
		"ttl too long":   {mustSignAdmin(t, keyA, long), ReasonTTLTooLong},
		"no iat":         {noIat, ReasonMissingClaim},
		"expired":        {mustSignAdmin(t, keyA, expired), ReasonExpired},
		"garbage":        {"eyJ.x.y", ReasonMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(tc.token)
			if got := ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

// An admin token is never a session token.
func TestSessionVerifierRefusesAdminToken(t *testing.T) {
	v := newTestVerifier(t, VerifierOptions{})
	_, err := v.Verify(mustSignAdmin(t, keyA, adminClaims(ScopeSessionsRevoke)))
	if ReasonOf(err) != ReasonWrongAudience {
		t.Fatalf("got %v, want wrong_audience", err)
	}
}

func TestSignAdminRefuses(t *testing.T) {
	s, _ := NewSigner(keyA)
	if _, err := s.SignAdmin(AdminClaims{}); err == nil {
		t.Error("signed without a scope")
	}
	c := adminClaims(ScopeSessionsList)
	c.Audience = jwt.ClaimStrings{AdminAudience, DefaultAudience}
	if _, err := s.SignAdmin(c); err == nil {
		t.Error("signed a token that is also for the session audience")
	}
}
