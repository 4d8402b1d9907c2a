package hmac

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
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
