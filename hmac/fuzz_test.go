package hmac

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/golang-jwt/jwt/v5"
)

func fuzzVerifier(t *testing.T) *Verifier {
	v, err := NewVerifier(VerifierOptions{Keys: StaticKeys(keyA), Now: fixedNow(t0)})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// FuzzVerify checks the parser's two promises:
//
//  1. no input makes Verify panic, and any token that verifies re-encodes
//     to itself: it is byte for byte what the Signer produced (a MAC
//     cannot be forged, so the fuzzer can only find seeds);
//  2. a token signed from arbitrary claims verifies with those exact
//     claims, and every single-byte change, truncation or extension of it
//     is refused.
func FuzzVerify(f *testing.F) {
	s, _ := NewSigner(keyA)
	seed, _ := s.Sign(validClaims())
	f.Add(seed, "team-a", "web-0", "app", "sh -c id", true, true, uint16(5), byte('A'))
	f.Add("", "", "", "", "", false, false, uint16(0), byte(0))
	f.Add("e30.e30.", "n", "p", "", "", false, false, uint16(100), byte('.'))
	f.Add(seed+"=", "ns", "pod", "c", "bash", true, false, uint16(60), byte('\n'))

	f.Fuzz(func(t *testing.T, token, ns, pod, container, cmd string, tty, stdin bool, pos uint16, b byte) {
		// 1.
		if c, err := fuzzVerifier(t).Verify(token); err == nil {
			again, err := s.Sign(*c)
			if err != nil || again != token {
				t.Fatalf("verified a token the signer would not produce:\n%q\n%q (%v)", token, again, err)
			}
		} else if ReasonOf(err) == ReasonUnknown {
			t.Fatalf("untyped error %v", err)
		}

		// 2.
		c := validClaims()
		c.Namespace, c.Pod, c.Container, c.TTY, c.Stdin = ns, pod, container, tty, stdin
		c.Command = strings.Fields(cmd)
		c.Audience = []string{DefaultAudience} // what Sign would fill in
		tok, err := s.Sign(c)
		valid := ns != "" && pod != "" && utf8.ValidString(ns) && utf8.ValidString(pod) &&
			utf8.ValidString(container) && utf8.ValidString(cmd)
		if valid != (err == nil) {
			t.Fatalf("Sign(%+v) error %v", c, err)
		}
		if err != nil {
			return
		}
		got, err := fuzzVerifier(t).Verify(tok)
		if err != nil {
			if len(tok) > MaxTokenLen && ReasonOf(err) == ReasonMalformed {
				return // the claims were just too big
			}
			t.Fatalf("fresh token refused: %v", err)
		}
		g, _ := got.MarshalJSON()
		w, _ := c.MarshalJSON()
		if !bytes.Equal(g, w) {
			t.Fatalf("claims changed in transit:\n got %s\nwant %s", g, w)
		}
		var back map[string]any
		if err := json.Unmarshal(g, &back); err != nil {
			t.Fatal(err)
		}

		i := int(pos) % len(tok)
		if tok[i] != b {
			mutated := tok[:i] + string([]byte{b}) + tok[i+1:]
			if _, err := fuzzVerifier(t).Verify(mutated); err == nil {
				t.Fatalf("byte %d changed to %q and still verifies", i, b)
			}
		}
		if _, err := fuzzVerifier(t).Verify(tok[:i]); err == nil {
			t.Fatalf("truncated to %d bytes and still verifies", i)
		}
		if _, err := fuzzVerifier(t).Verify(tok + string([]byte{b})); err == nil {
			t.Fatalf("extended by %q and still verifies", b)
		}
	})
}

// FuzzInspect: the unverified decoder never panics, and what it returns is
// two JSON objects.
func FuzzInspect(f *testing.F) {
	s, _ := NewSigner(keyA)
	seed, _ := s.Sign(validClaims())
	f.Add(seed)
	f.Add("e30.e30.AA")
	f.Add("e30.e30.")
	f.Add(" e30.e30.AA")
	f.Add("e30=.e30.AA")
	f.Fuzz(func(t *testing.T, token string) {
		h, c, err := Inspect(token)
		if err != nil {
			if h != nil || c != nil {
				t.Fatal("partial result with an error")
			}
			return
		}
		for _, raw := range []json.RawMessage{h, c} {
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("not a JSON object: %q: %v", raw, err)
			}
		}
	})
}

// FuzzClaimsAgreeWithGoJose: whatever claims we accept, go-jose (an
// independent JOSE implementation with a case-sensitive JSON decoder that
// refuses duplicate names) reads the same token the same way. We may be
// stricter, never laxer or different. The payload is checked twice: on its
// own (so the fuzzer is not confined to valid times) and inside a token
// signed with a held key and verified at t0.
func FuzzClaimsAgreeWithGoJose(f *testing.F) {
	exp, iat := t0.Add(50*time.Second).Unix(), t0.Add(-10*time.Second).Unix()
	f.Add([]byte(claimsJSON(nil)))
	f.Add([]byte(fmt.Sprintf(`{"aud":["k8s-ws-proxy","x"],"exp":%d.9,"iat":%d,"nbf":%d,"iss":"i","sub":"s","jti":"j","sid":"s","namespace":"n","pod":"p","container":"c","command":["sh","-c","id"],"tty":true,"stdin":false,"node":"n1","extra":{"a":[1,{"b":null}]}}`, exp, iat, iat)))
	f.Add([]byte(fmt.Sprintf(`{"aud":"k8s-ws-proxy","exp":%d,"jti":"j","namespace":"n","pod":"p","POD":"q"}`, exp)))
	f.Add([]byte(fmt.Sprintf(`{"aud":"k8s-ws-proxy","exp":"%d","jti":"j","namespace":"n","pod":"p"}`, exp)))
	f.Add([]byte(fmt.Sprintf(`{"aud":"k8s-ws-proxy","exp":%d,"jti":"j","namespace":"n","pod":"p","pod":"q"}`, exp)))
	f.Add([]byte(fmt.Sprintf(`{"aud":"k8s-ws-proxy","exp":%d,"jti":"j","namespace":"n","p\u006fd":"p","x":{"y":1,"y":2}}`, exp)))
	f.Add([]byte(`{"exp":1e400,"nbf":-1,"iat":9007199254740993}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var ours Claims
		if err := json.Unmarshal(payload, &ours); err == nil {
			compareWithGoJose(t, payload, &ours, func(j *joseClaims) error { return josejson.Unmarshal(payload, j) })
		}
		tok := rawToken(keyA, hdr(keyA), string(payload))
		c, err := fuzzVerifier(t).Verify(tok)
		if err != nil {
			return
		}
		parse := func(j *joseClaims) error {
			parsed, err := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.HS256})
			if err != nil {
				return err
			}
			return parsed.Claims(keyA, &j.Claims, &j.scope)
		}
		compareWithGoJose(t, payload, c, parse)
	})
}

// joseClaims is the claim set as a go-jose user declares it.
type joseClaims struct {
	josejwt.Claims
	scope
}

// UnmarshalJSON decodes both halves from the same object, as go-jose's
// Claims(key, &std, &priv) does.
func (j *joseClaims) UnmarshalJSON(b []byte) error {
	if err := josejson.Unmarshal(b, &j.Claims); err != nil {
		return err
	}
	return josejson.Unmarshal(b, &j.scope)
}

func compareWithGoJose(t *testing.T, payload []byte, ours *Claims, parse func(*joseClaims) error) {
	t.Helper()
	var j joseClaims
	if err := parse(&j); err != nil {
		t.Fatalf("we accept claims go-jose refuses (%v): %s", err, payload)
	}
	date := func(d *jwt.NumericDate) int64 {
		if d == nil {
			return -1
		}
		return d.Unix()
	}
	jdate := func(d *josejwt.NumericDate) int64 {
		if d == nil {
			return -1
		}
		return int64(*d)
	}
	oursView := fmt.Sprintf("%q %q %q %q %d %d %d | %q %q %q %q %q %v %v %q",
		ours.Issuer, ours.Subject, []string(ours.Audience), ours.ID, date(ours.ExpiresAt), date(ours.NotBefore), date(ours.IssuedAt),
		ours.SID, ours.Namespace, ours.Pod, ours.Container, ours.Command, ours.TTY, ours.Stdin, ours.Node)
	joseView := fmt.Sprintf("%q %q %q %q %d %d %d | %q %q %q %q %q %v %v %q",
		j.Issuer, j.Subject, []string(j.Audience), j.ID, jdate(j.Expiry), jdate(j.NotBefore), jdate(j.IssuedAt),
		j.SID, j.Namespace, j.Pod, j.Container, j.Command, j.TTY, j.Stdin, j.Node)
	// An empty list and no list read the same to both.
	oursView = strings.ReplaceAll(oursView, "[]", "nil")
	joseView = strings.ReplaceAll(joseView, "[]", "nil")
	if oursView != joseView {
		t.Fatalf("claims read differently:\n ours    %s\n go-jose %s\npayload %s", oursView, joseView, payload)
	}
}
