package hmac

import (
	"encoding/json"
	"strings"
	"testing"
)

// mode, resumable and resume (issue 15) survive the strict decoder with
// their exact types, and an unknown mode is refused rather than ignored: a
// proxy must never open a shell for a token meant to only watch one.
func TestSessionControlClaimsDecoded(t *testing.T) {
	var c Claims
	if err := json.Unmarshal([]byte(`{"namespace":"ns","pod":"p","sid":"s-1","mode":"observe","resumable":true,"resume":"s-0"}`), &c); err != nil {
		t.Fatal(err)
	}
	if c.Mode != ModeObserve || !c.Resumable || c.Resume != "s-0" {
		t.Fatalf("decoded %+v", c)
	}
	for bad, why := range map[string]string{
		`{"mode":"moderate"}`:  `must be "observe"`,
		`{"mode":""}`:          `must be "observe"`,
		`{"mode":1}`:           "must be a string",
		`{"mode":null}`:        "must be a string",
		`{"Mode":"observe"}`:   "case-sensitive",
		`{"resumable":"true"}`: "must be true or false",
		`{"resumable":1}`:      "must be true or false",
		`{"resume":["s"]}`:     "must be a string",
		`{"resume":null}`:      "must be a string",
		`{"RESUME":"s"}`:       "case-sensitive",
	} {
		err := json.Unmarshal([]byte(bad), &c)
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%s: %v, want %q", bad, err, why)
		}
	}
	in := Claims{Namespace: "ns", Pod: "p", Mode: ModeObserve, Resumable: true, Resume: "s-0"}
	b, _ := in.MarshalJSON()
	var back Claims
	if err := json.Unmarshal(b, &back); err != nil || back.Mode != in.Mode || back.Resumable != in.Resumable || back.Resume != in.Resume {
		t.Fatalf("round trip %s: %+v %v", b, back, err)
	}
	// Omitted when unset: existing tokens keep their bytes.
	plain, _ := Claims{Namespace: "ns", Pod: "p"}.MarshalJSON()
	if string(plain) != `{"namespace":"ns","pod":"p"}` {
		t.Fatalf("plain claims %s", plain)
	}
}
