package hmac

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// KeySource finds the key a token names by its kid. now is the verifier's
// clock, so a source with time-limited keys (the Keyring's grace period)
// agrees with the verifier about what "now" is.
type KeySource interface {
	Lookup(kid string, now time.Time) ([]byte, bool)
}

// staticKeys is a fixed KeySource indexed by KeyID.
type staticKeys map[string][]byte

// StaticKeys returns a fixed KeySource holding keys, for tests and for
// tools that verify against a key they were handed. Keys shorter than
// MinKeyLen are left out, exactly as the Keyring would refuse them.
func StaticKeys(keys ...[]byte) KeySource {
	s := make(staticKeys, len(keys))
	for _, k := range keys {
		if len(k) >= MinKeyLen {
			s[KeyID(k)] = bytes.Clone(k)
		}
	}
	return s
}

// Lookup implements KeySource; keys never expire.
func (s staticKeys) Lookup(kid string, _ time.Time) ([]byte, bool) {
	k, ok := s[kid]
	return k, ok
}

// asciiSpace is what is trimmed from the end of a key file: editors and
// `echo` add a newline, and a key is meant to be text (for example 48
// random bytes, base64-encoded). Only ASCII whitespace, so that a binary key
// never loses a byte that merely looks like a Unicode space.
const asciiSpace = " \t\n\v\f\r"

// errShortKey and errLargeKey classify key files that are refused.
var (
	errShortKey   = errors.New("key too short")
	errLargeKey   = errors.New("key file too large")
	errNotRegular = errors.New("not a regular file")
)

// ParseKey turns the contents of a key file into a key: trailing ASCII
// whitespace is removed and the result must be at least MinKeyLen bytes.
// The error never contains key material.
func ParseKey(content []byte) ([]byte, error) {
	k := bytes.TrimRight(content, asciiSpace)
	if len(k) < MinKeyLen {
		return nil, fmt.Errorf("%w: %d bytes after trimming trailing whitespace, need at least %d", errShortKey, len(k), MinKeyLen)
	}
	return k, nil
}

// LoadKeyFile reads one key file (following symlinks) and parses it with
// ParseKey. Only regular files are read, so a FIFO or device mounted by
// mistake cannot block or flood the caller.
func LoadKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (%s)", path, errNotRegular, fi.Mode().Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileLen+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFileLen {
		return nil, fmt.Errorf("%s: %w: over %d bytes", path, errLargeKey, maxKeyFileLen)
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
