package hmac

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestVerifier(t *testing.T, opts VerifierOptions) *Verifier {
	t.Helper()
	if opts.Keys == nil {
		opts.Keys = StaticKeys(keyA)
	}
	if opts.Now == nil {
		opts.Now = fixedNow(t0)
	}
	v, err := NewVerifier(opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// must(f())(t) is f's value, failing t on f's error: one helper for every
// must* below (Go passes a call's two results only as the whole argument list).
func must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func mustSigner(t *testing.T, key []byte) *Signer {
	t.Helper()
	return must(NewSigner(key))(t)
}

func mustSign(t *testing.T, key []byte, c Claims) string {
	t.Helper()
	return must(mustSigner(t, key).Sign(c))(t)
}

// spentToken is a verifier on a test clock and a valid token it has
// verified (and so spent) once.
func spentToken(t *testing.T) (*clock, *Verifier, string) {
	t.Helper()
	clk := newClock(t0)
	v := newTestVerifier(t, VerifierOptions{Now: clk.Now})
	tok := mustSign(t, keyA, validClaims())
	if _, err := v.Verify(tok); err != nil {
		t.Fatal(err)
	}
	return clk, v, tok
}

func TestVerifyAcceptsAndReturnsClaims(t *testing.T) {
	v := newTestVerifier(t, VerifierOptions{})
	want := validClaims()
	got, err := v.Verify(mustSign(t, keyA, want))
	if err != nil {
		t.Fatal(err)
	}
	want.Audience = []string{DefaultAudience} // filled in by Sign
	// Compared through the encoding: time.Time values differ in location.
	g, _ := got.MarshalJSON()
	w, _ := want.MarshalJSON()
	if string(g) != string(w) || !reflect.DeepEqual(got.Command, want.Command) {
		t.Errorf("claims\n got %s\nwant %s", g, w)
	}
}

// claimsJSON returns validClaims as JSON with edits applied: a value of nil
// deletes the member.
func claimsJSON(edits map[string]any) string {
	m := map[string]any{
		"aud": DefaultAudience, "exp": t0.Add(50 * time.Second).Unix(), "iat": t0.Add(-10 * time.Second).Unix(),
		"jti": "j", "namespace": "n", "pod": "p",
	}
	for k, v := range edits {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	var b strings.Builder
	b.WriteString("{")
	first := true
	for k, v := range m {
		if !first {
			b.WriteString(",")
		}
		first = false
		fmt.Fprintf(&b, "%q:", k)
		switch v := v.(type) {
		case string:
			fmt.Fprintf(&b, "%q", v)
		case []string:
			b.WriteString("[")
			for i, s := range v {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, "%q", s)
			}
			b.WriteString("]")
		default:
			fmt.Fprintf(&b, "%v", v)
		}
	}
	b.WriteString("}")
	return b.String()
}

func TestVerifyRejections(t *testing.T) {
	good := rawToken(keyA, hdr(keyA), claimsJSON(nil))
	goodParts := strings.Split(good, ".")
	hs384 := func() string {
		in := b64(`{"alg":"HS384","kid":"`+KeyID(keyA)+`"}`) + "." + b64(claimsJSON(nil))
		m := hmac.New(sha512.New384, keyA)
		m.Write([]byte(in))
		return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}()
	// The last character of a 32-byte signature carries 4 bits of data and
	// 2 zero bits; flipping a zero bit keeps the decoded bytes, so only
	// strict decoding refuses it.
	sig := goodParts[2]
	last := strings.IndexByte(base64URLAlphabet, sig[len(sig)-1])
	nonCanonical := goodParts[0] + "." + goodParts[1] + "." + sig[:len(sig)-1] + string(base64URLAlphabet[last|1])

	cases := []struct {
		name  string
		token string
		want  Reason
	}{
		{"empty", "", ReasonMalformed},
		{"one segment", "abc", ReasonMalformed},
		{"two segments", goodParts[0] + "." + goodParts[1], ReasonMalformed},
		{"four segments", good + ".e30", ReasonMalformed},
		{"padding", goodParts[0] + "=." + goodParts[1] + "." + goodParts[2], ReasonMalformed},
		{"padded signature", good + "=", ReasonMalformed},
		{"standard base64 alphabet", goodParts[0] + "." + goodParts[1] + ".+" + sig[1:], ReasonMalformed},
		{"newline inside", good[:10] + "\n" + good[10:], ReasonMalformed},
		{"space inside", good[:10] + " " + good[10:], ReasonMalformed},
		{"non-canonical trailing bits", nonCanonical, ReasonMalformed},
		{"header not json", rawToken(keyA, "nope", claimsJSON(nil)), ReasonMalformed},
		{"claims not json", rawToken(keyA, hdr(keyA), "nope"), ReasonMalformed},
		{"claims array", rawToken(keyA, hdr(keyA), "[1]"), ReasonMalformed},
		{"exp is a string", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"exp": `"soon"`})), ReasonMalformed},
		{"command is a string", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"command": "ls"})), ReasonMalformed},
		{"aud is a number", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"aud": 7})), ReasonMalformed},
		{"crit header", rawToken(keyA, `{"alg":"HS256","kid":"`+KeyID(keyA)+`","crit":["exp"]}`, claimsJSON(nil)), ReasonMalformed},
		{"typ not JWT", rawToken(keyA, `{"alg":"HS256","kid":"`+KeyID(keyA)+`","typ":"at+jwt"}`, claimsJSON(nil)), ReasonMalformed},
		{"too long", good + strings.Repeat("A", MaxTokenLen), ReasonMalformed},

		{"alg none", b64(`{"alg":"none","kid":"`+KeyID(keyA)+`"}`) + "." + b64(claimsJSON(nil)) + ".", ReasonBadAlgorithm},
		{"alg none with signature", rawToken(keyA, `{"alg":"none","kid":"`+KeyID(keyA)+`"}`, claimsJSON(nil)), ReasonBadAlgorithm},
		{"alg HS384", hs384, ReasonBadAlgorithm},
		{"alg RS256", rawToken(keyA, `{"alg":"RS256","kid":"`+KeyID(keyA)+`"}`, claimsJSON(nil)), ReasonBadAlgorithm},
		{"alg unknown", rawToken(keyA, `{"alg":"XX999","kid":"`+KeyID(keyA)+`"}`, claimsJSON(nil)), ReasonBadAlgorithm},
		{"alg missing", rawToken(keyA, `{"kid":"`+KeyID(keyA)+`"}`, claimsJSON(nil)), ReasonBadAlgorithm},
		{"alg lower case", rawToken(keyA, `{"alg":"hs256","kid":"`+KeyID(keyA)+`"}`, claimsJSON(nil)), ReasonBadAlgorithm},

		{"kid missing", rawToken(keyA, `{"alg":"HS256"}`, claimsJSON(nil)), ReasonMissingKID},
		{"kid empty", rawToken(keyA, `{"alg":"HS256","kid":""}`, claimsJSON(nil)), ReasonMissingKID},
		{"kid a number", rawToken(keyA, `{"alg":"HS256","kid":7}`, claimsJSON(nil)), ReasonMissingKID},

		{"unknown kid", rawToken(keyB, hdr(keyB), claimsJSON(nil)), ReasonUnknownKey},

		{"signed with another key", rawToken(keyB, hdr(keyA), claimsJSON(nil)), ReasonBadSignature},
		{"payload swapped", goodParts[0] + "." + b64(claimsJSON(map[string]any{"pod": "other"})) + "." + goodParts[2], ReasonBadSignature},
		{"signature too short", goodParts[0] + "." + goodParts[1] + ".AAAAAAAAAAAAAAAAAAAAAA", ReasonBadSignature},
		{"signature empty", goodParts[0] + "." + goodParts[1] + ".", ReasonBadSignature},

		{"expired beyond leeway", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"iat": t0.Add(-2 * time.Minute).Unix(), "exp": t0.Add(-DefaultLeeway).Unix()})), ReasonExpired},
		{"exp long ago", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"iat": nil, "exp": 1})), ReasonExpired},
		{"nbf beyond leeway", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"nbf": t0.Add(DefaultLeeway + time.Second).Unix()})), ReasonNotYetValid},
		{"iat in the future", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"iat": t0.Add(DefaultLeeway + time.Second).Unix(), "exp": t0.Add(2 * time.Minute).Unix()})), ReasonNotYetValid},

		{"wrong audience", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"aud": "other"})), ReasonWrongAudience},
		{"audience list without ours", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"aud": []string{"a", "b"}})), ReasonWrongAudience},

		{"no exp", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"exp": nil})), ReasonMissingClaim},
		{"no aud", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"aud": nil})), ReasonMissingClaim},
		{"empty aud", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"aud": ""})), ReasonMissingClaim},
		{"no jti", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"jti": nil})), ReasonMissingClaim},
		{"no namespace", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"namespace": nil})), ReasonMissingClaim},
		{"no pod", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"pod": ""})), ReasonMissingClaim},

		{"exp - iat over max", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"iat": t0.Unix(), "exp": t0.Add(DefaultMaxTTL + time.Second).Unix()})), ReasonTTLTooLong},
		{"no iat and exp too far", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"iat": nil, "exp": t0.Add(DefaultMaxTTL + DefaultLeeway + time.Second).Unix()})), ReasonTTLTooLong},
		{"exp in year 3000", rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"iat": nil, "exp": 32503680000})), ReasonTTLTooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := newTestVerifier(t, VerifierOptions{})
			c, err := v.Verify(tc.token)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if got := ReasonOf(err); got != tc.want {
				t.Errorf("reason %q, want %q (%v)", got, tc.want, err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("error is %T, not *Error", err)
			}
			if len(tc.token) > 20 {
				for _, part := range strings.Split(tc.token, ".") {
					if len(part) > 8 && strings.Contains(err.Error(), part) {
						t.Errorf("error message contains a token segment: %v", err)
					}
				}
			}
		})
	}
}

const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// The edges of every time rule, each checked from both sides.
func TestVerifyTimeBoundaries(t *testing.T) {
	accept := []map[string]any{
		{"iat": t0.Add(-2 * time.Minute).Unix(), "exp": t0.Add(-DefaultLeeway + time.Second).Unix()}, // expired, inside leeway
		{"nbf": t0.Add(DefaultLeeway).Unix()},                                                        // not yet valid, inside leeway
		{"iat": t0.Add(DefaultLeeway).Unix(), "exp": t0.Add(time.Minute).Unix()},                     // iat ahead, inside leeway
		{"iat": t0.Unix(), "exp": t0.Add(DefaultMaxTTL).Unix()},                                      // exactly the max TTL
		{"iat": nil, "exp": t0.Add(DefaultMaxTTL + DefaultLeeway).Unix()},                            // no iat, exactly max TTL + leeway
		{"aud": []string{"x", DefaultAudience}},                                                      // list including ours
	}
	for i, edits := range accept {
		v := newTestVerifier(t, VerifierOptions{})
		if _, err := v.Verify(rawToken(keyA, hdr(keyA), claimsJSON(edits))); err != nil {
			t.Errorf("case %d %v: %v", i, edits, err)
		}
	}
}

func TestVerifyOptions(t *testing.T) {
	tok := rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"aud": "custom", "iat": t0.Unix(), "exp": t0.Add(9 * time.Minute).Unix()}))
	if _, err := newTestVerifier(t, VerifierOptions{}).Verify(tok); ReasonOf(err) != ReasonWrongAudience {
		t.Errorf("default audience: %v", err)
	}
	if _, err := newTestVerifier(t, VerifierOptions{Audience: "custom"}).Verify(tok); ReasonOf(err) != ReasonTTLTooLong {
		t.Errorf("custom audience, default max TTL: %v", err)
	}
	if _, err := newTestVerifier(t, VerifierOptions{Audience: "custom", MaxTTL: 10 * time.Minute}).Verify(tok); err != nil {
		t.Errorf("custom audience and max TTL: %v", err)
	}
	late := rawToken(keyA, hdr(keyA), claimsJSON(map[string]any{"iat": t0.Add(-3 * time.Minute).Unix(), "exp": t0.Add(-time.Minute).Unix()}))
	if _, err := newTestVerifier(t, VerifierOptions{}).Verify(late); ReasonOf(err) != ReasonExpired {
		t.Errorf("default leeway: %v", err)
	}
	if _, err := newTestVerifier(t, VerifierOptions{Leeway: 2 * time.Minute}).Verify(late); err != nil {
		t.Errorf("2m leeway: %v", err)
	}
	for _, bad := range []VerifierOptions{
		{},
		{Keys: StaticKeys(keyA), Leeway: -1},
		{Keys: StaticKeys(keyA), MaxTTL: -1},
		{Keys: StaticKeys(keyA), MaxTTL: 25 * time.Hour},
		{Keys: StaticKeys(keyA), ReplayCapacity: -1},
	} {
		if _, err := NewVerifier(bad); err == nil {
			t.Errorf("NewVerifier(%+v) accepted", bad)
		}
	}
}

func TestStaticKeysRefusesShortKeys(t *testing.T) {
	short := keyA[:MinKeyLen-1]
	if _, ok := StaticKeys(short).Lookup(KeyID(short), t0); ok {
		t.Error("short key served")
	}
	tok := rawToken(short, hdr(short), claimsJSON(nil))
	if _, err := newTestVerifier(t, VerifierOptions{Keys: StaticKeys(short, keyA)}).Verify(tok); ReasonOf(err) != ReasonUnknownKey {
		t.Errorf("token signed with a short key: %v", err)
	}
}

func TestVerifySingleUse(t *testing.T) {
	clk, v, tok := spentToken(t)
	if _, err := v.Verify(tok); ReasonOf(err) != ReasonReplayed {
		t.Fatalf("second use: %v", err)
	}
	// Still refused at the last instant it could otherwise verify...
	c := validClaims()
	clk.Add(c.ExpiresAt.Sub(t0) + DefaultLeeway - time.Nanosecond)
	if _, err := v.Verify(tok); ReasonOf(err) != ReasonReplayed {
		t.Fatalf("replay just before exp+leeway: %v", err)
	}
	// ...and expired after it; the cache has forgotten it by then.
	clk.Add(time.Nanosecond)
	if _, err := v.Verify(tok); ReasonOf(err) != ReasonExpired {
		t.Fatalf("after exp+leeway: %v", err)
	}
	// A different jti is a different token; checking it also evicts what
	// has expired, so the first jti is gone from the cache.
	c.ID = "jti-2"
	c.IssuedAt, c.ExpiresAt = numericDate(clk.Now()), numericDate(clk.Now().Add(time.Minute))
	if _, err := v.Verify(mustSign(t, keyA, c)); err != nil {
		t.Errorf("fresh jti: %v", err)
	}
	if n := v.replay.len(); n != 1 {
		t.Errorf("replay cache holds %d jtis, want only the fresh one", n)
	}
}

func TestVerifyReplayCacheFullFailsClosed(t *testing.T) {
	clk := newClock(t0)
	v := newTestVerifier(t, VerifierOptions{Now: clk.Now, ReplayCapacity: 2})
	tok := func(jti string) string {
		c := validClaims()
		c.ID = jti
		c.IssuedAt, c.ExpiresAt = numericDate(clk.Now()), numericDate(clk.Now().Add(time.Minute))
		return mustSign(t, keyA, c)
	}
	t1, t2 := tok("1"), tok("2")
	for _, x := range []string{t1, t2} {
		if _, err := v.Verify(x); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.Verify(tok("3")); ReasonOf(err) != ReasonReplayCacheFull {
		t.Fatalf("third jti with capacity 2: %v", err)
	}
	// A replay is still reported as a replay when full.
	if _, err := v.Verify(t1); ReasonOf(err) != ReasonReplayed {
		t.Fatalf("replay while full: %v", err)
	}
	// Once the first two have expired there is room again.
	clk.Add(time.Minute + DefaultLeeway)
	if _, err := v.Verify(tok("4")); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

func TestVerifyConcurrentSingleUse(t *testing.T) {
	v := newTestVerifier(t, VerifierOptions{})
	tok := mustSign(t, keyA, validClaims())
	const n = 16
	var wg sync.WaitGroup
	results := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := v.Verify(tok)
			results <- err
		})
	}
	wg.Wait()
	close(results)
	ok, replayed := 0, 0
	for err := range results {
		switch ReasonOf(err) {
		case "":
			ok++
		case ReasonReplayed:
			replayed++
		default:
			t.Errorf("unexpected %v", err)
		}
	}
	if ok != 1 || replayed != n-1 {
		t.Errorf("%d accepted, %d replayed; want 1 and %d", ok, replayed, n-1)
	}
}

func TestReasonOf(t *testing.T) {
	if ReasonOf(nil) != "" {
		t.Error("nil")
	}
	if ReasonOf(errors.New("x")) != ReasonUnknown {
		t.Error("foreign error")
	}
	wrapped := fmt.Errorf("ctx: %w", &Error{Reason: ReasonExpired})
	if ReasonOf(wrapped) != ReasonExpired {
		t.Error("wrapped")
	}
	inner := errors.New("inner")
	if e := (&Error{Reason: ReasonMalformed, Err: inner}); !errors.Is(e, inner) || e.Error() != "token rejected: malformed: inner" {
		t.Errorf("Unwrap/Error: %q", e.Error())
	}
}
