// Package hmactest holds test helpers for HMAC keys: fresh keys as a
// Secret holds them, and waiting for a keyring to pick one up. It does not
// import package hmac, so hmac's own tests can use it. Key directories are
// written with internal/filewatch/filewatchtest.
package hmactest

import (
	"crypto/rand"
	"encoding/base64"
	"testing"
	"time"
)

// NewKey returns a fresh random key as a Secret would hold it: 32 random
// bytes, base64-encoded (44 bytes of text).
func NewKey(t testing.TB) []byte {
	t.Helper()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return []byte(base64.StdEncoding.EncodeToString(b[:]))
}

// Keyring is what WaitForKey needs of an *hmac.Keyring.
type Keyring interface {
	Lookup(kid string, now time.Time) ([]byte, bool)
	Changed() <-chan struct{}
}

// WaitForKey waits until Lookup(kid, time.Now()) reports usable, or fails
// the test after timeout. It wakes on the keyring's change notifications,
// not on a timer, so it returns as soon as the reload has happened. (A key
// whose grace period runs out without a reload has no notification; wait
// for that with a clock passed to Lookup instead.)
func WaitForKey(t testing.TB, k Keyring, kid string, usable bool, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := k.Changed() // take it before checking, so no change is missed
		if _, ok := k.Lookup(kid, time.Now()); ok == usable {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("hmactest: key %s did not become usable=%v within %s", kid, usable, timeout)
		}
	}
}
