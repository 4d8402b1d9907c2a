package hmac

import (
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// scope is the private part of the claims, as another implementation
// would declare it.
type scope struct {
	SID       string   `json:"sid,omitempty"`
	Namespace string   `json:"namespace"`
	Pod       string   `json:"pod"`
	Container string   `json:"container,omitempty"`
	Command   []string `json:"command,omitempty"`
	TTY       bool     `json:"tty,omitempty"`
	Stdin     bool     `json:"stdin,omitempty"`
	Node      string   `json:"node,omitempty"`
}

// A control plane using go-jose (an independent JOSE implementation) needs
// no code of ours: its tokens verify here.
func TestInteropGoJoseMintsWeVerify(t *testing.T) {
	for _, withTyp := range []bool{false, true} {
		// go-jose ignores JSONWebKey.KeyID for symmetric keys; the kid goes
		// in as an explicit header.
		opts := (&jose.SignerOptions{}).WithHeader("kid", KeyID(keyA))
		if withTyp {
			opts = opts.WithType("JWT")
		}
		sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: keyA}, opts)
		if err != nil {
			t.Fatal(err)
		}
		std := josejwt.Claims{
			Subject:  "alice",
			Audience: josejwt.Audience{DefaultAudience}, // serialised as a one-element array
			Expiry:   josejwt.NewNumericDate(t0.Add(time.Minute)),
			IssuedAt: josejwt.NewNumericDate(t0),
			ID:       "jose-1",
		}
		priv := scope{SID: "s", Namespace: "team-a", Pod: "web-0", Container: "app", Command: []string{"sh", "-c", "id"}, TTY: true, Stdin: true, Node: "n1"}
		tok, err := josejwt.Signed(sig).Claims(std).Claims(priv).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		c, err := newTestVerifier(t, VerifierOptions{}).Verify(tok)
		if err != nil {
			t.Fatalf("typ=%v: go-jose token refused: %v", withTyp, err)
		}
		if c.Subject != "alice" || c.ID != "jose-1" || c.Namespace != "team-a" || c.Pod != "web-0" ||
			c.Container != "app" || len(c.Command) != 3 || c.Command[2] != "id" || !c.TTY || !c.Stdin || c.Node != "n1" || c.SID != "s" {
			t.Errorf("claims %+v", c)
		}
		// And go-jose's HS384 is refused, as any other algorithm (with a
		// key long enough for go-jose to accept it for HS384).
		long := append(append([]byte{}, keyA...), keyB...)
		sig384, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS384, Key: long}, (&jose.SignerOptions{}).WithHeader("kid", KeyID(long)))
		if err != nil {
			t.Fatal(err)
		}
		tok384, err := josejwt.Signed(sig384).Claims(std).Claims(priv).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newTestVerifier(t, VerifierOptions{Keys: StaticKeys(long)}).Verify(tok384); ReasonOf(err) != ReasonBadAlgorithm {
			t.Errorf("go-jose HS384: %v", err)
		}
	}
}

// And our tokens verify with go-jose, kid and all.
func TestInteropWeMintGoJoseVerifies(t *testing.T) {
	want := validClaims()
	tok := mustSign(t, keyA, want)
	parsed, err := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.HS256})
	if err != nil {
		t.Fatal(err)
	}
	if len(parsed.Headers) != 1 || parsed.Headers[0].KeyID != KeyID(keyA) || parsed.Headers[0].Algorithm != "HS256" {
		t.Fatalf("headers %+v", parsed.Headers)
	}
	var std josejwt.Claims
	var priv scope
	if err := parsed.Claims(keyA, &std, &priv); err != nil {
		t.Fatalf("go-jose refuses our signature: %v", err)
	}
	if err := std.ValidateWithLeeway(josejwt.Expected{AnyAudience: josejwt.Audience{DefaultAudience}, Time: t0, ID: "jti-1", Subject: "alice"}, 0); err != nil {
		t.Errorf("go-jose claim validation: %v", err)
	}
	if priv.Namespace != want.Namespace || priv.Pod != want.Pod || priv.Node != want.Node || len(priv.Command) != 3 || !priv.TTY {
		t.Errorf("private claims %+v", priv)
	}
	// go-jose also notices a wrong key: the comparison above is not vacuous.
	if err := parsed.Claims(keyB, &std, &priv); err == nil {
		t.Error("go-jose accepted our token with another key")
	}
}
