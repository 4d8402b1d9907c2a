package hmac

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// claimDecoders decodes each claim we know, by its exact name. A new claim
// is one entry here and one field in Claims.
var claimDecoders = map[string]func(c *Claims, raw json.RawMessage) error{
	"iss":       stringClaim(func(c *Claims) *string { return &c.Issuer }),
	"sub":       stringClaim(func(c *Claims) *string { return &c.Subject }),
	"jti":       stringClaim(func(c *Claims) *string { return &c.ID }),
	"sid":       stringClaim(func(c *Claims) *string { return &c.SID }),
	"namespace": stringClaim(func(c *Claims) *string { return &c.Namespace }),
	"pod":       stringClaim(func(c *Claims) *string { return &c.Pod }),
	"container": stringClaim(func(c *Claims) *string { return &c.Container }),
	"node":      stringClaim(func(c *Claims) *string { return &c.Node }),
	"exp":       timeClaim(func(c *Claims) **jwt.NumericDate { return &c.ExpiresAt }),
	"nbf":       timeClaim(func(c *Claims) **jwt.NumericDate { return &c.NotBefore }),
	"iat":       timeClaim(func(c *Claims) **jwt.NumericDate { return &c.IssuedAt }),
	"tty":       boolClaim(func(c *Claims) *bool { return &c.TTY }),
	"stdin":     boolClaim(func(c *Claims) *bool { return &c.Stdin }),
	"resumable": boolClaim(func(c *Claims) *bool { return &c.Resumable }),
	"resume":    stringClaim(func(c *Claims) *string { return &c.Resume }),
	"mode": func(c *Claims, raw json.RawMessage) error {
		if err := stringClaim(func(c *Claims) *string { return &c.Mode })(c, raw); err != nil {
			return err
		}
		if c.Mode != ModeObserve {
			return fmt.Errorf("must be %q (a mode this proxy does not know must not open a shell)", ModeObserve)
		}
		return nil
	},
	"aud": func(c *Claims, raw json.RawMessage) error {
		if raw[0] == '"' {
			var s string
			err := json.Unmarshal(raw, &s)
			c.Audience = jwt.ClaimStrings{s}
			return err
		}
		l, err := stringList(raw)
		c.Audience = l
		return err
	},
	"command": func(c *Claims, raw json.RawMessage) error {
		l, err := stringList(raw)
		c.Command = l
		return err
	},
	"groups": func(c *Claims, raw json.RawMessage) error {
		l, err := stringList(raw)
		c.Groups = l
		return err
	},
}

// maxNumericDate bounds exp, nbf and iat: 2^53 seconds is exact in a
// float64 (and so in every JSON implementation) and far past any real time.
const maxNumericDate = 1 << 53

// UnmarshalJSON decodes the claims strictly, unlike encoding/json's
// defaults: names match exactly (RFC 7519 4: they are case-sensitive), and
// a name that differs from one of ours only in case is refused rather than
// ignored, since a lenient verifier elsewhere would read it as ours; no
// member name appears twice at any depth (readers disagree on which one
// wins); exp, nbf and iat are JSON numbers in [0, 2^53], not strings; every
// other claim has exactly its type (no null). Unknown claims are allowed
// and ignored.
func (c *Claims) UnmarshalJSON(b []byte) error {
	if err := checkNoDuplicateNames(b); err != nil {
		return err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(b, &members); err != nil {
		return err
	}
	if members == nil {
		return errors.New("claims are not a JSON object")
	}
	*c = Claims{}
	for name, raw := range members {
		decode, ok := claimDecoders[name]
		if !ok {
			for known := range claimDecoders {
				if strings.EqualFold(name, known) {
					return fmt.Errorf("claim %q: claim names are case-sensitive (did you mean %q?)", truncate(name), known)
				}
			}
			continue
		}
		if err := decode(c, raw); err != nil {
			return fmt.Errorf("claim %q: %w", name, err)
		}
	}
	return nil
}

// checkNoDuplicateNames walks the whole document. encoding/json's
// map decoding above would silently keep the last of two members.
func checkNoDuplicateNames(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type object struct {
		names   map[string]struct{}
		wantKey bool
	}
	var stack []*object
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var top *object
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if s, ok := tok.(string); ok && top != nil && top.wantKey {
			if _, dup := top.names[s]; dup {
				return fmt.Errorf("member %q appears twice", truncate(s))
			}
			top.names[s] = struct{}{}
			top.wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &object{names: map[string]struct{}{}, wantKey: true})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		case json.Delim('['):
			stack = append(stack, nil)
			continue
		}
		// A value ended: an object's next token is a key again.
		if len(stack) > 0 && stack[len(stack)-1] != nil {
			stack[len(stack)-1].wantKey = true
		}
	}
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

func stringClaim(field func(*Claims) *string) func(*Claims, json.RawMessage) error {
	return func(c *Claims, raw json.RawMessage) error {
		if raw[0] != '"' {
			return errors.New("must be a string")
		}
		return json.Unmarshal(raw, field(c))
	}
}

func boolClaim(field func(*Claims) *bool) func(*Claims, json.RawMessage) error {
	return func(c *Claims, raw json.RawMessage) error {
		if raw[0] != 't' && raw[0] != 'f' {
			return errors.New("must be true or false")
		}
		return json.Unmarshal(raw, field(c))
	}
}

func timeClaim(field func(*Claims) **jwt.NumericDate) func(*Claims, json.RawMessage) error {
	return func(c *Claims, raw json.RawMessage) error {
		var n json.Number
		if raw[0] == '"' || json.Unmarshal(raw, &n) != nil {
			return errors.New("must be a JSON number of seconds")
		}
		f, err := n.Float64()
		if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
			return errors.New("must be a number of seconds from 0 to 2^53")
		}
		d := new(jwt.NumericDate)
		if err := d.UnmarshalJSON(raw); err != nil {
			return err
		}
		*field(c) = d
		return nil
	}
}

// stringList decodes a JSON array whose elements are all strings.
func stringList(raw json.RawMessage) ([]string, error) {
	var elems []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &elems) != nil {
		return nil, errors.New("must be an array of strings")
	}
	out := make([]string, len(elems))
	for i, e := range elems {
		if e[0] != '"' {
			return nil, errors.New("must be an array of strings")
		}
		if err := json.Unmarshal(e, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}
