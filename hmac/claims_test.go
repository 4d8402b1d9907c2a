package hmac

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestClaimsStrictDecoding: claim names are case-sensitive (RFC 7519 4),
// no name may appear twice, and the times are JSON numbers. Go's
// encoding/json, left to itself, matches "POD" to the pod field, keeps
// the last of two "pod" members and reads "exp":"123" as a number.
func TestClaimsStrictDecoding(t *testing.T) {
	exp := t0.Add(50 * time.Second).Unix()
	base := fmt.Sprintf(`"aud":%q,"exp":%d,"iat":%d,"jti":"j","namespace":"n"`, DefaultAudience, exp, t0.Add(-10*time.Second).Unix())
	cases := []struct {
		name   string
		claims string
	}{
		{"pod and POD", `{` + base + `,"pod":"p","POD":"victim"}`},
		{"POD only", `{` + base + `,"POD":"victim"}`},
		{"Command beside command", `{` + base + `,"pod":"p","command":["ls"],"Command":["rm","-rf","/"]}`},
		{"NODE", `{` + base + `,"pod":"p","NODE":"other"}`},
		{"Namespace", `{` + base + `,"pod":"p","Namespace":"kube-system"}`},
		{"Exp", `{` + base + `,"pod":"p","Exp":1}`},
		{"pod twice", `{` + base + `,"pod":"p","pod":"victim"}`},
		{"jti twice", `{` + base + `,"pod":"p","jti":"k"}`},
		{"unknown claim twice", `{` + base + `,"pod":"p","x":1,"x":2}`},
		{"exp as a numeric string", fmt.Sprintf(`{"aud":%q,"exp":"%d","jti":"j","namespace":"n","pod":"p"}`, DefaultAudience, exp)},
		{"iat as a numeric string", fmt.Sprintf(`{"aud":%q,"exp":%d,"iat":"%d","jti":"j","namespace":"n","pod":"p"}`, DefaultAudience, exp, t0.Unix())},
		{"nbf as a numeric string", `{` + base + `,"pod":"p","nbf":"1"}`},
		{"exp negative", fmt.Sprintf(`{"aud":%q,"exp":%d,"nbf":-1,"jti":"j","namespace":"n","pod":"p"}`, DefaultAudience, exp)},
		{"pod null", `{` + base + `,"pod":null,"pod":"p"}`},
		{"sid null", `{` + base + `,"pod":"p","sid":null}`},
		{"tty a string", `{` + base + `,"pod":"p","tty":"true"}`},
		{"tty null", `{` + base + `,"pod":"p","tty":null}`},
		{"command null", `{` + base + `,"pod":"p","command":null}`},
		{"command element null", `{` + base + `,"pod":"p","command":["sh",null]}`},
		{"aud element null", fmt.Sprintf(`{"aud":[%q,null],"exp":%d,"jti":"j","namespace":"n","pod":"p"}`, DefaultAudience, exp)},
		{"trailing data after the object", `{` + base + `,"pod":"p"} {}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newTestVerifier(t, VerifierOptions{}).Verify(rawToken(keyA, hdr(keyA), tc.claims))
			if err == nil {
				t.Fatalf("accepted: pod %q command %q node %q namespace %q", c.Pod, c.Command, c.Node, c.Namespace)
			}
			if ReasonOf(err) != ReasonMalformed {
				t.Fatalf("reason %s, want malformed (%v)", ReasonOf(err), err)
			}
		})
	}

	// What stays accepted: unknown claims, fractional times, escapes that
	// spell a known name exactly, an audience list.
	for _, ok := range []string{
		`{` + base + `,"pod":"p","x-extra":{"POD":1,"pod":2}}`,
		fmt.Sprintf(`{"aud":[%q,"b"],"exp":%d.5,"jti":"j","namespace":"n","p\u006fd":"p"}`, DefaultAudience, exp),
		`{` + base + `,"pod":"p","tty":false,"stdin":true,"command":[]}`,
	} {
		if c, err := newTestVerifier(t, VerifierOptions{}).Verify(rawToken(keyA, hdr(keyA), ok)); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		} else if c.Pod != "p" {
			t.Errorf("%s: pod %q", ok, c.Pod)
		}
	}
	if !strings.Contains(base, "jti") {
		t.Fatal("bad fixture")
	}
}
