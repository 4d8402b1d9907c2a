package proxy

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRuneCutAndTail(t *testing.T) {
	t.Parallel()
	b := []byte("a✓b") // ✓ is 3 bytes at 1..3
	for k, want := range map[int]int{1: 1, 2: 1, 3: 1, 4: 4} {
		if got := runeCut(b, k); got != want {
			t.Errorf("runeCut(%q, %d) = %d, want %d", b, k, got, want)
		}
	}
	if got := runeCut([]byte("✓✓"), 1); got != 1 {
		t.Errorf("a frame must keep a byte: %d", got)
	}
	bad := []byte{'a', 0xff, 0x80, 0x80, 'b'}
	if got := runeCut(bad, 3); got != 3 {
		t.Errorf("non-UTF-8 bytes are cut anywhere: %d", got)
	}
	for in, want := range map[string]int{"a": 0, "a\xe2": 1, "a\xe2\x9c": 2, "a\xe2\x9c\x93": 0, "\xff": 0, "\x80\x80": 0, "\xf0\x9f\x98": 3} {
		if got := incompleteTail([]byte(in)); got != want {
			t.Errorf("incompleteTail(%q) = %d, want %d", in, got, want)
		}
	}
}

// A status built from a long error fits a frame as valid JSON, keeping
// its structure (status, reason, the exit code's cause) and a prefix of
// its message; older protocols get the text, cut on a character.
func TestStatusPayloadFits(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 3000)
	st := &metav1.Status{Status: metav1.StatusFailure, Reason: "NonZeroExitCode", Message: "command terminated: " + long,
		Details: &metav1.StatusDetails{Causes: []metav1.StatusCause{{Type: "ExitCode", Message: "3"}}}}
	for _, limit := range []int{63, 200, 4095} {
		ss := &session{proto: protocolFor(ProtocolV5), payload: limit}
		p := ss.statusPayload(st)
		var got metav1.Status
		if len(p) > limit || json.Unmarshal(p, &got) != nil {
			t.Fatalf("limit %d: %d bytes %q", limit, len(p), p)
		}
		if got.Status != metav1.StatusFailure || got.Reason != "NonZeroExitCode" {
			t.Fatalf("limit %d: lost the structure: %s", limit, p)
		}
		if limit >= 200 && (got.Details == nil || got.Details.Causes[0].Message != "3" || !strings.HasPrefix(got.Message, "command terminated: é")) {
			t.Fatalf("limit %d: lost the cause or the message: %s", limit, p)
		}
		v1 := &session{proto: protocolFor(ProtocolV1), payload: limit}
		if p := v1.statusPayload(st); len(p) > limit || !utf8.Valid(p) {
			t.Fatalf("v1 limit %d: %q", limit, p)
		}
	}
	if st.Message != "command terminated: "+long || st.Details.Causes[0].Message != "3" {
		t.Fatal("statusPayload changed its argument")
	}
}
