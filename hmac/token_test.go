package hmac

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestKeyID(t *testing.T) {
	// Expected values computed with Python's hashlib, not with this code.
	for key, want := range map[string]string{
		string(keyA): "6d2214a04993d03c",
		"":           "e3b0c44298fc1c14",
	} {
		if got := KeyID([]byte(key)); got != want {
			t.Errorf("KeyID(%q) = %s, want %s", key, got, want)
		}
	}
}

func TestNewSignerRefusesShortKey(t *testing.T) {
	if _, err := NewSigner(keyA[:MinKeyLen-1]); err == nil {
		t.Fatal("31-byte key accepted")
	}
	s, err := NewSigner(keyA[:MinKeyLen])
	if err != nil {
		t.Fatalf("32-byte key refused: %v", err)
	}
	if s.KeyID() != KeyID(keyA[:MinKeyLen]) {
		t.Errorf("signer kid %s", s.KeyID())
	}
}

func decodeSeg(t *testing.T, seg string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSignHeaderAndDefaults(t *testing.T) {
	s, _ := NewSigner(keyA)
	before := time.Now().Truncate(time.Second)
	tok, err := s.Sign(Claims{Namespace: "ns", Pod: "p"})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d segments", len(parts))
	}
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if want := `{"alg":"HS256","kid":"6d2214a04993d03c"}`; string(h) != want {
		t.Errorf("header %s, want %s", h, want)
	}
	c := decodeSeg(t, parts[1])
	if c["aud"] != DefaultAudience {
		t.Errorf("aud = %v, want the string %q", c["aud"], DefaultAudience)
	}
	if jti, _ := c["jti"].(string); len(jti) != 22 {
		t.Errorf("default jti %q, want 22 base64url characters", jti)
	}
	iat, _ := c["iat"].(float64)
	exp, _ := c["exp"].(float64)
	if int64(iat) < before.Unix() || int64(iat) > time.Now().Unix() {
		t.Errorf("iat %v not now", iat)
	}
	if exp-iat != DefaultTTL.Seconds() {
		t.Errorf("exp - iat = %v, want %v", exp-iat, DefaultTTL.Seconds())
	}
	if _, ok := c["command"]; ok {
		t.Error("empty command encoded")
	}
	// Two tokens never share a jti.
	tok2, _ := s.Sign(Claims{Namespace: "ns", Pod: "p"})
	if decodeSeg(t, strings.Split(tok2, ".")[1])["jti"] == c["jti"] {
		t.Error("two default jtis are equal")
	}
}

func TestSignRefusesUnverifiableClaims(t *testing.T) {
	s, _ := NewSigner(keyA)
	for name, c := range map[string]Claims{
		"no namespace": {Pod: "p"},
		"no pod":       {Namespace: "n"},
		"bad utf8 pod": {Namespace: "n", Pod: "p\xff"},
		"bad utf8 arg": {Namespace: "n", Pod: "p", Command: []string{"ok", "\xc3"}},
	} {
		if tok, err := s.Sign(c); err == nil {
			t.Errorf("%s: signed %s", name, tok)
		}
	}
}

func TestClaimsJSONIsCompactAndOrdered(t *testing.T) {
	c := validClaims()
	c.Command = []string{"a<b", "&"}
	// Called directly: json.Marshal would re-escape < and & (equivalent
	// JSON, but not what Sign puts in the token).
	b, err := c.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"exp":1772366450,"iat":1772366390,"sub":"alice","jti":"jti-1","sid":"s-1","namespace":"team-a","pod":"web-0","container":"app","command":["a<b","&"],"tty":true,"stdin":true,"node":"node-1"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	c.Audience = jwt.ClaimStrings{"x", "y"}
	b, _ = c.MarshalJSON()
	if !strings.HasPrefix(string(b), `{"aud":["x","y"],`) {
		t.Errorf("two audiences: %s", b)
	}
	// And it reads back into the same claims.
	var back Claims
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	b2, _ := back.MarshalJSON()
	if string(b2) != string(b) {
		t.Errorf("round trip: %s != %s", b2, b)
	}
}

func TestInspect(t *testing.T) {
	s, _ := NewSigner(keyA)
	tok, _ := s.Sign(validClaims())
	h, c, err := Inspect(tok)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(h), KeyID(keyA)) || !strings.Contains(string(c), `"pod":"web-0"`) {
		t.Errorf("header %s claims %s", h, c)
	}
	// An expired token signed with an unknown key still inspects: it is for
	// debugging exactly such tokens.
	old := rawToken([]byte("some-other-key-0123456789abcdef-xyz"), hdr(keyB), `{"exp":1}`)
	if _, _, err := Inspect(old); err != nil {
		t.Errorf("inspect of an expired foreign token: %v", err)
	}
	for name, bad := range map[string]string{
		"empty":           "",
		"two segments":    "e30.e30",
		"four segments":   "e30.e30.e30.e30",
		"padding":         "e30=.e30.AAAA",
		"newline":         "e3\n0.e30.AAAA",
		"not json":        b64("nope") + ".e30.AAAA",
		"array claims":    "e30." + b64("[1]") + ".AAAA",
		"empty signature": "e30.e30.",
		"too long":        "e30.e30." + strings.Repeat("A", MaxTokenLen),
	} {
		if _, _, err := Inspect(bad); err == nil {
			t.Errorf("%s: no error", name)
		} else if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("%s: error contains the token", name)
		}
	}
}
