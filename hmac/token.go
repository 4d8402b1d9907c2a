package hmac

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// DefaultAudience is the aud a token must carry unless the verifier is
	// configured otherwise.
	DefaultAudience = "k8s-ws-proxy"

	// MinKeyLen is the shortest HMAC key accepted anywhere: RFC 2104
	// discourages keys shorter than the hash output (32 bytes for SHA-256).
	MinKeyLen = 32

	// DefaultTTL is the lifetime Signer.Sign gives a token without exp.
	DefaultTTL = time.Minute

	// MaxTokenLen bounds what Verify and Inspect will look at. A real token
	// is well under 1 KiB (it has to fit in guacd's 1024-byte request line);
	// the bound keeps hostile input from costing more than a few
	// microseconds.
	MaxTokenLen = 8 << 10

	// maxKeyFileLen bounds how much of a key file is read: a key is a few
	// dozen bytes, and reading an arbitrarily large file mounted by mistake
	// would only waste memory.
	maxKeyFileLen = 64 << 10

	// algorithm is the only JWS algorithm issued or accepted.
	algorithm = "HS256"
)

// KeyID returns the kid of a key: the first 16 hex characters of
// SHA-256(key). Deriving it from the key means a minter needs nothing but the
// key, and two replicas can never disagree about a key's name.
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// Claims is the payload of a session token: the registered JWT claims plus
// the exact scope of the session. Everything here is covered by the
// signature; the proxy must take the scope from these claims, never from
// unsigned request parameters.
type Claims struct {
	jwt.RegisteredClaims // iss, sub, aud, exp, nbf, iat, jti

	// SID identifies the session for audit; it need not be unique.
	SID       string   `json:"sid,omitempty"`
	Namespace string   `json:"namespace"`
	Pod       string   `json:"pod"`
	Container string   `json:"container,omitempty"`
	Command   []string `json:"command,omitempty"` // argv; empty = attach
	TTY       bool     `json:"tty,omitempty"`
	Stdin     bool     `json:"stdin,omitempty"`
	// Node, when set, is the only node whose proxy may accept the token.
	Node string `json:"node,omitempty"`
	// Groups are the user's groups, sent as Impersonate-Group when the
	// proxy impersonates the user (--impersonate); ignored otherwise.
	Groups []string `json:"groups,omitempty"`
	// Mode is "" (the session runs the exec) or ModeObserve: join the live
	// session SID read-only (docs/tokens.md). The decoder refuses any other
	// value, so a mode this proxy does not know never opens a shell.
	Mode string `json:"mode,omitempty"`
	// Resumable: the session survives an abnormal client drop for the
	// proxy's resume window.
	Resumable bool `json:"resumable,omitempty"`
	// Resume is the sid of a dropped resumable session to continue.
	Resume string `json:"resume,omitempty"`
}

// ModeObserve is the mode claim of an observer's token.
const ModeObserve = "observe"

// registeredWire is the registered claims as both kinds of token encode
// them: times as integer seconds, a single audience as a plain string.
type registeredWire struct {
	Audience  any    `json:"aud,omitempty"`
	ExpiresAt *int64 `json:"exp,omitempty"`
	IssuedAt  *int64 `json:"iat,omitempty"`
	NotBefore *int64 `json:"nbf,omitempty"`
	Issuer    string `json:"iss,omitempty"`
	Subject   string `json:"sub,omitempty"`
	ID        string `json:"jti,omitempty"`
}

func newRegisteredWire(c jwt.RegisteredClaims) registeredWire {
	w := registeredWire{
		ExpiresAt: unixPtr(c.ExpiresAt),
		IssuedAt:  unixPtr(c.IssuedAt),
		NotBefore: unixPtr(c.NotBefore),
		Issuer:    c.Issuer,
		Subject:   c.Subject,
		ID:        c.ID,
	}
	switch len(c.Audience) {
	case 0:
	case 1:
		w.Audience = c.Audience[0]
	default:
		w.Audience = []string(c.Audience)
	}
	return w
}

// wireClaims fixes the member order and the compact forms of the encoding:
// the token usually travels inside guacd's 1024-byte request path, so every
// byte counts, and a stable order makes the documented example reproducible.
// encoding/json puts the embedded registered claims first, and their
// shallower fields hide the ones of claimFields' jwt.RegisteredClaims; the
// scope follows in Claims' field order.
type wireClaims struct {
	registeredWire
	claimFields
}

// claimFields is Claims without its methods: embedded as is, Claims would
// lend wireClaims its MarshalJSON and recurse.
type claimFields Claims

func unixPtr(d *jwt.NumericDate) *int64 {
	if d == nil {
		return nil
	}
	u := d.Unix()
	return &u
}

// MarshalJSON encodes the claims exactly as Signer puts them in a token:
// times as integer seconds, a single audience as a plain string, members in
// a fixed order, no HTML escaping.
func (c Claims) MarshalJSON() ([]byte, error) {
	return compactJSON(wireClaims{newRegisteredWire(c.RegisteredClaims), claimFields(c)})
}

// compactJSON encodes v without HTML escaping and without the trailing
// newline, as a token's payload.
func compactJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// allStrings returns every string-valued claim, for validation.
func (c *Claims) allStrings() []string {
	s := []string{c.Issuer, c.Subject, c.ID, c.SID, c.Namespace, c.Pod, c.Container, c.Node}
	s = append(s, c.Audience...)
	s = append(s, c.Groups...)
	return append(s, c.Command...)
}

// NewID returns 128 random bits, base64url without padding (22 characters):
// the default jti and sid.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go >= 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Signer mints tokens with one key. It is safe for concurrent use.
type Signer struct {
	key    []byte
	kid    string
	header string // base64url of the header JSON, computed once
}

// NewSigner returns a Signer for key, which must be at least MinKeyLen bytes.
func NewSigner(key []byte) (*Signer, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("hmac: key is %d bytes, need at least %d", len(key), MinKeyLen)
	}
	k := bytes.Clone(key)
	kid := KeyID(k)
	// Written by hand so the member order is fixed: {"alg":"HS256","kid":"..."}.
	h := `{"alg":"` + algorithm + `","kid":"` + kid + `"}`
	return &Signer{key: k, kid: kid, header: base64.RawURLEncoding.EncodeToString([]byte(h))}, nil
}

// KeyID returns the kid this signer puts in its tokens.
func (s *Signer) KeyID() string { return s.kid }

// Sign returns the compact JWS for c. Missing registered claims get
// defaults so that a caller cannot forget them: aud = DefaultAudience,
// jti = NewID(), iat = now, exp = iat + DefaultTTL. Namespace and pod are
// required (a token without them would never verify), and every string must
// be valid UTF-8 (JSON would silently replace invalid bytes, and the token
// would then not say what the caller asked for).
func (s *Signer) Sign(c Claims) (string, error) {
	if c.Namespace == "" || c.Pod == "" {
		return "", errors.New("hmac: claims need a namespace and a pod")
	}
	for _, v := range c.allStrings() {
		if !utf8.ValidString(v) {
			return "", errors.New("hmac: claim is not valid UTF-8")
		}
	}
	withDefaults(&c.RegisteredClaims, DefaultAudience, DefaultTTL)
	payload, err := c.MarshalJSON()
	if err != nil {
		return "", fmt.Errorf("hmac: encoding claims: %w", err)
	}
	return s.sign(payload)
}

// withDefaults fills the registered claims a caller left out: aud, jti = NewID(),
// iat = now, exp = iat + ttl.
func withDefaults(c *jwt.RegisteredClaims, aud string, ttl time.Duration) {
	if len(c.Audience) == 0 {
		c.Audience = jwt.ClaimStrings{aud}
	}
	if c.ID == "" {
		c.ID = NewID()
	}
	if c.IssuedAt == nil {
		c.IssuedAt = jwt.NewNumericDate(time.Now())
	}
	if c.ExpiresAt == nil {
		c.ExpiresAt = jwt.NewNumericDate(c.IssuedAt.Add(ttl))
	}
}

// sign returns the compact JWS of payload under this signer's header and key.
func (s *Signer) sign(payload []byte) (string, error) {
	var b strings.Builder
	b.Grow(len(s.header) + 1 + base64.RawURLEncoding.EncodedLen(len(payload)) + 1 + 43)
	b.WriteString(s.header)
	b.WriteByte('.')
	b.WriteString(base64.RawURLEncoding.EncodeToString(payload))
	signingInput := b.String()
	sig, err := jwt.SigningMethodHS256.Sign(signingInput, s.key)
	if err != nil {
		return "", fmt.Errorf("hmac: signing: %w", err)
	}
	b.WriteByte('.')
	b.WriteString(base64.RawURLEncoding.EncodeToString(sig))
	return b.String(), nil
}

// Inspect decodes a token's header and claims WITHOUT checking anything: no
// signature, no expiry, no audience. It is for humans debugging a token
// (the CLI's "token inspect"); never base a decision on its result.
func Inspect(token string) (header, claims json.RawMessage, err error) {
	if len(token) > MaxTokenLen {
		return nil, nil, fmt.Errorf("token is %d bytes, longer than %d", len(token), MaxTokenLen)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, nil, fmt.Errorf("token has %d segments, want 3", len(parts))
	}
	dec := base64.RawURLEncoding.Strict()
	seg := func(name, s string) (json.RawMessage, error) {
		if !isBase64URL(s) {
			return nil, fmt.Errorf("%s segment is not unpadded base64url", name)
		}
		b, err := dec.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%s segment: %w", name, err)
		}
		if t := bytes.TrimLeft(b, " \t\r\n"); !json.Valid(b) || len(t) == 0 || t[0] != '{' {
			return nil, fmt.Errorf("%s segment is not a JSON object", name)
		}
		return b, nil
	}
	if header, err = seg("header", parts[0]); err != nil {
		return nil, nil, err
	}
	if claims, err = seg("claims", parts[1]); err != nil {
		return nil, nil, err
	}
	if !isBase64URL(parts[2]) || parts[2] == "" {
		return nil, nil, errors.New("signature segment is not unpadded base64url")
	}
	return header, claims, nil
}

// isBase64URL reports whether s holds only the unpadded base64url alphabet.
// encoding/base64 silently skips '\r' and '\n' even in strict mode, so the
// alphabet is checked first: otherwise two different strings could decode to
// the same token.
func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}
