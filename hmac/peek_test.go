package hmac

import (
	"testing"
	"time"
)

// TestPeekDoesNotConsume: a token peeked at any number of times still
// verifies once, and a peek after that use reports it as used.
func TestPeekDoesNotConsume(t *testing.T) {
	v := newTestVerifier(t, VerifierOptions{})
	tok := mustSign(t, keyA, validClaims())
	for i := range 3 {
		c, used, err := v.Peek(tok)
		if err != nil || used || c == nil || c.Pod != "web-0" {
			t.Fatalf("peek %d: claims %v, used %v, err %v; want the claims, unused", i, c, used, err)
		}
	}
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("Verify after peeks: %v", err)
	}
	c, used, err := v.Peek(tok)
	if err != nil || !used || c == nil {
		t.Fatalf("peek after use: claims %v, used %v, err %v; want the claims, used", c, used, err)
	}
	if _, err := v.Verify(tok); ReasonOf(err) != ReasonReplayed {
		t.Fatalf("second Verify: %v, want replayed", err)
	}
}

// TestPeekRefusesAsVerify: every refusal Verify makes, Peek makes with the
// same reason, and a refused token is not reported used.
func TestPeekRefusesAsVerify(t *testing.T) {
	expired := validClaims()
	expired.ExpiresAt = numericDate(t0.Add(-time.Minute))
	good := mustSign(t, keyA, validClaims())
	for _, tc := range []struct {
		name, token string
		want        Reason
	}{
		{"malformed", "not-a-token", ReasonMalformed},
		{"unknown key", mustSign(t, keyB, validClaims()), ReasonUnknownKey},
		{"bad signature", good[:len(good)-2] + "AA", ReasonBadSignature},
		{"expired", mustSign(t, keyA, expired), ReasonExpired},
		{"missing pod", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"pod": nil})), ReasonMissingClaim},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVerifier(t, VerifierOptions{})
			c, used, err := v.Peek(tc.token)
			if ReasonOf(err) != tc.want || c != nil || used {
				t.Errorf("Peek: claims %v, used %v, err %v; want reason %s", c, used, err, tc.want)
			}
			if _, verr := v.Verify(tc.token); ReasonOf(verr) != tc.want {
				t.Errorf("Verify: %v; want reason %s", verr, tc.want)
			}
		})
	}
}

// TestPeekForgetsExpired: once a consumed token's entry is forgotten (it
// could not verify anyway), Peek refuses it as expired, not as used.
func TestPeekForgetsExpired(t *testing.T) {
	clk, v, tok := spentToken(t)
	clk.Add(5 * time.Minute)
	if _, used, err := v.Peek(tok); ReasonOf(err) != ReasonExpired || used {
		t.Fatalf("Peek of an expired, consumed token: used %v, err %v; want expired", used, err)
	}
}
