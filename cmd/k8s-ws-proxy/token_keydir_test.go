package main

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac/hmactest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/bootstrap"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
)

// mint --key-dir signs with the newest key older than --propagation-delay:
// a key added a moment ago is not used yet, one older than the delay is.
func TestTokenMintKeyDirPicksPropagatedKey(t *testing.T) {
	old, fresh := hmactest.NewKey(t), hmactest.NewKey(t)
	dir := t.TempDir()
	// Two seconds old: past the end of the second its name records.
	freshName := bootstrap.KeyName(time.Now().Add(-2 * time.Second))
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"key": old, freshName: fresh})
	kid := func(args ...string) (string, string) {
		t.Helper()
		code, out, errOut := runTokenCmd(t, "", append([]string{"mint", "--key-dir", dir, "--namespace", "a", "--pod", "p"}, args...)...)
		if code != 0 {
			t.Fatalf("mint %v: %d %s", args, code, errOut)
		}
		head, _, _ := strings.Cut(strings.TrimSpace(out), ".")
		raw, err := base64.RawURLEncoding.DecodeString(head)
		if err != nil {
			t.Fatal(err)
		}
		var h struct{ Kid string }
		if err := json.Unmarshal(raw, &h); err != nil {
			t.Fatal(err)
		}
		return h.Kid, errOut
	}
	if got, _ := kid(); got != hmac.KeyID(old) {
		t.Errorf("default 2m delay: signed with %s, want the old key %s", got, hmac.KeyID(old))
	}
	if got, _ := kid("--propagation-delay", "0s"); got != hmac.KeyID(fresh) {
		t.Errorf("no delay: signed with %s, want the new key %s", got, hmac.KeyID(fresh))
	}
	if code, _, errOut := runTokenCmd(t, "", "mint", "--key-dir", dir, "--key-file", dir+"/key", "--namespace", "a", "--pod", "p"); code == 0 || !strings.Contains(errOut, "exclusive") {
		t.Errorf("--key-file with --key-dir: %d %s", code, errOut)
	}
	// Only young keys: the oldest, with a warning.
	young := t.TempDir()
	filewatchtest.WriteSecretDir(t, young, map[string][]byte{freshName: fresh})
	dir = young
	if got, warn := kid(); got != hmac.KeyID(fresh) || !strings.Contains(warn, "younger than --propagation-delay") {
		t.Errorf("only a young key: %s, stderr %q", got, warn)
	}
}
