package hmac

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testlog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Fixed keys: 32+ bytes of text, as a Secret would hold them.
var (
	keyA = []byte("key-A-0123456789abcdef0123456789abcdef")
	keyB = []byte("key-B-0123456789abcdef0123456789abcdef")
)

// t0 is the fixed "now" of most tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable clock shared by a keyring and a verifier.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}
func (c *clock) Now() time.Time             { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Add(d time.Duration)        { c.ns.Add(int64(d)) }
func fixedNow(t time.Time) func() time.Time { return func() time.Time { return t } }

func numericDate(t time.Time) *jwt.NumericDate { return jwt.NewNumericDate(t) }

// b64 is base64url without padding.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// rawToken builds a token by hand from literal JSON with crypto/hmac, so
// tests do not depend on Signer (and can build what Signer never would).
func rawToken(key []byte, header, claims string) string {
	in := b64(header) + "." + b64(claims)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// hdr is the standard header for key.
func hdr(key []byte) string { return `{"alg":"HS256","kid":"` + KeyID(key) + `"}` }

// validClaims are claims that verify at t0.
func validClaims() Claims {
	c := Claims{Namespace: "team-a", Pod: "web-0", Container: "app", Command: []string{"sh", "-c", "echo hi"}, TTY: true, Stdin: true, Node: "node-1", SID: "s-1"}
	c.Subject = "alice"
	c.ID = "jti-1"
	c.IssuedAt = numericDate(t0.Add(-10 * time.Second))
	c.ExpiresAt = numericDate(t0.Add(50 * time.Second))
	return c
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer = testlog.Buffer

func testLogger(buf *syncBuffer) *slog.Logger { return buf.Logger() }
