package hmac

import (
	"encoding/json"
	"slices"
	"testing"
)

// The groups claim (impersonation) survives the strict decoder, with the
// same type rules as command.
func TestGroupsClaimDecoded(t *testing.T) {
	var c Claims
	if err := json.Unmarshal([]byte(`{"namespace":"ns","pod":"p","groups":["devs","ops"]}`), &c); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Groups, []string{"devs", "ops"}) {
		t.Fatalf("groups %v", c.Groups)
	}
	for _, bad := range []string{`{"groups":"devs"}`, `{"groups":[1]}`, `{"groups":null}`, `{"Groups":["devs"]}`} {
		if err := json.Unmarshal([]byte(bad), &c); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	b, _ := Claims{Namespace: "ns", Pod: "p", Groups: []string{"devs"}}.MarshalJSON()
	var back Claims
	if err := json.Unmarshal(b, &back); err != nil || !slices.Equal(back.Groups, []string{"devs"}) {
		t.Fatalf("round trip %s: %v %v", b, back.Groups, err)
	}
}
