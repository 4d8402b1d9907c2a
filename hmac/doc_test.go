package hmac

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// docBlock returns the fenced code block that follows the HTML comment
// marker in docs/tokens.md.
func docBlock(t *testing.T, doc, marker string) string {
	t.Helper()
	_, after, ok := strings.Cut(doc, "<!-- "+marker+" -->\n")
	if !ok {
		t.Fatalf("docs/tokens.md has no %q marker", marker)
	}
	_, body, ok := strings.Cut(after, "\n") // the ```lang line
	if !ok {
		t.Fatalf("no code block after %q", marker)
	}
	body, _, ok = strings.Cut(body, "```")
	if !ok {
		t.Fatalf("unterminated code block after %q", marker)
	}
	return body
}

// The worked example in docs/tokens.md must stay true: its token is what the
// Go signer makes from its key and claims, it verifies, and the Python code
// shown carries the same key and claims, in the same order.
func TestDocsWorkedExample(t *testing.T) {
	raw, err := os.ReadFile("../docs/tokens.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	token := strings.TrimSpace(docBlock(t, doc, "example-token"))
	header := strings.TrimSpace(docBlock(t, doc, "example-header"))
	claimsJSON := strings.TrimSpace(docBlock(t, doc, "example-claims"))
	python := docBlock(t, doc, "example-python")

	m := regexp.MustCompile(`(?m)^key = b"([^"]+)"`).FindStringSubmatch(python)
	if m == nil {
		t.Fatal("no key = b\"...\" line in the Python example")
	}
	key := []byte(m[1])
	kid := KeyID(key)
	if !strings.Contains(doc, "kid = `"+kid+"`") || !strings.Contains(python, `"`+kid+`"`) {
		t.Errorf("the doc does not state the example key's kid %s", kid)
	}

	// The shown header and claims are the token's segments, byte for byte.
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("doc token has %d segments", len(parts))
	}
	for i, want := range []string{header, claimsJSON} {
		got, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || string(got) != want {
			t.Errorf("segment %d decodes to %s, the doc shows %s (%v)", i, got, want, err)
		}
	}

	// The Python dict is the same JSON in the same order.
	pm := regexp.MustCompile(`(?s)\nclaims = (\{.*?\n\})`).FindStringSubmatch(python)
	if pm == nil {
		t.Fatal("no claims = {...} in the Python example")
	}
	pyJSON := regexp.MustCompile(`\s+#[^\n]*`).ReplaceAllString(pm[1], "")
	pyJSON = strings.NewReplacer("True", "true", "False", "false").Replace(pyJSON)
	pyJSON = regexp.MustCompile(`,\s*\}$`).ReplaceAllString(pyJSON, "}") // Python's trailing comma
	var compacted bytes.Buffer
	if err := json.Compact(&compacted, []byte(pyJSON)); err != nil {
		t.Fatalf("Python claims are not JSON-like: %v\n%s", err, pyJSON)
	}
	if compacted.String() != claimsJSON {
		t.Errorf("Python claims\n%s\ndiffer from the doc's\n%s", compacted.String(), claimsJSON)
	}

	// The Go signer makes exactly this token from these claims.
	var c Claims
	if err := json.Unmarshal([]byte(claimsJSON), &c); err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Sign(c); err != nil || got != token {
		t.Errorf("Go signer makes\n%s\nthe doc shows\n%s (%v)", got, token, err)
	}

	// And it verifies while it is valid, and only then.
	iat := c.IssuedAt.Time
	v := newTestVerifier(t, VerifierOptions{Keys: StaticKeys(key), Now: fixedNow(iat.Add(time.Second))})
	if _, err := v.Verify(token); err != nil {
		t.Errorf("doc token does not verify: %v", err)
	}
	late := newTestVerifier(t, VerifierOptions{Keys: StaticKeys(key), Now: fixedNow(c.ExpiresAt.Add(DefaultLeeway))})
	if _, err := late.Verify(token); ReasonOf(err) != ReasonExpired {
		t.Errorf("doc token after expiry: %v", err)
	}
}
