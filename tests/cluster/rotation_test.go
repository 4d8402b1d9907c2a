package cluster

import (
	"context"
	"net/http"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// Short token lifetimes so the old key's grace period (max TTL + leeway,
// the longest an old token can stay valid) runs out within the test.
const (
	rotationMaxTTL = 12 * time.Second
	rotationLeeway = 2 * time.Second
	rotationGrace  = rotationMaxTTL + rotationLeeway
)

// TestKeyRotationAsOperatorDoesIt is issue 4's test 5: delete the Secret,
// re-run the bootstrap (the Helm hook) to make a new key, deliver it into
// the proxy's key directory the way the kubelet updates a Secret volume.
// New tokens are accepted; tokens of the old key are accepted for the grace
// period and refused after it; a session opened before the rotation keeps
// streaming throughout.
func TestKeyRotationAsOperatorDoesIt(t *testing.T) {
	const ns = "rotation-e2e"
	h := applyHook(t, ns)
	args, secretName, keyName := h.args, h.secretName, h.keyName
	waitAuthorized(t, ns, h.sa, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "secrets"}, true)
	kubeconfig := serviceAccountKubeconfig(t, ns, h.sa)
	secrets := api.AdminClient().CoreV1().Secrets(ns)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	bootstrapKey := func() []byte {
		t.Helper()
		if r := runBootstrap(t, ns, kubeconfig, args); r.exitCode != 0 {
			t.Fatalf("bootstrap exited %d:\n%s", r.exitCode, r.stderr)
		}
		s, err := secrets.Get(ctx, secretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s.Data[keyName]
	}
	oldKey := bootstrapKey()

	p := startProxy(t, proxyOptions{extra: []string{
		"--max-ttl", rotationMaxTTL.String(), "--leeway", rotationLeeway.String(),
	}})
	// The proxy's key directory holds the Secret as the kubelet mounts it.
	filewatchtest.SwapSecretDir(t, p.keyDir, map[string][]byte{keyName: oldKey})
	oldSigner, err := hmac.NewSigner(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	claims := func(s *hmac.Signer, command string) string {
		c := p.claims(true, command)
		c.ExpiresAt.Time = c.IssuedAt.Add(rotationMaxTTL)
		return testenv.Mint(t, s, c)
	}
	// tryOpen opens a session (of a command that ends at once) and reports
	// the HTTP status of the upgrade.
	tryOpen := func(s *hmac.Signer) int {
		t.Helper()
		g, resp, err := testenv.DialGuacd(p.Addr, workloadNamespace, claims(s, "true"), workloadContainer, "true")
		if err == nil {
			g.Drop()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("dial: %v", err)
		}
		return resp.StatusCode
	}
	// waitAccepted waits until a token of s opens a session.
	waitAccepted := func(s *hmac.Signer, never string) {
		t.Helper()
		if err := pollUntil(ctx, func() error {
			if st := tryOpen(s); st != http.StatusSwitchingProtocols {
				return errStatus(st)
			}
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", never, err)
		}
	}
	// The old key is in use: wait until the proxy has loaded it.
	waitAccepted(oldSigner, "the bootstrapped key never worked")

	// A long-lived session from before the rotation.
	live, resp, err := testenv.DialGuacd(p.Addr, workloadNamespace, claims(oldSigner, "/bin/sh"), workloadContainer, "/bin/sh")
	if err != nil {
		t.Fatalf("opening the long-lived session: %v (%v)", err, resp)
	}
	defer live.Drop()
	live.Resize(t, 80, 24)
	live.Send(t, "echo before-$((1+1))\r")
	live.WaitOutput(t, "before-2", time.Minute)

	// Rotate as an operator: delete the Secret, run the hook again.
	if err := secrets.Delete(ctx, secretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	newKey := bootstrapKey()
	if string(newKey) == string(oldKey) {
		t.Fatal("the bootstrap made the same key twice")
	}
	newSigner, err := hmac.NewSigner(newKey)
	if err != nil {
		t.Fatal(err)
	}
	swapped := filewatchtest.SwapSecretDir(t, p.keyDir, map[string][]byte{keyName: newKey})

	// New tokens work once the proxy has reloaded.
	waitAccepted(newSigner, "the new key was never accepted")
	reloaded := time.Since(swapped)
	t.Logf("new key usable %s after the volume swap", reloaded.Round(time.Millisecond))

	// Old tokens still work inside the grace period...
	if time.Since(swapped) < rotationGrace-2*time.Second {
		if st := tryOpen(oldSigner); st != http.StatusSwitchingProtocols {
			t.Errorf("old-key token refused (%d) %s after the swap, inside the %s grace period", st, time.Since(swapped).Round(time.Millisecond), rotationGrace)
		}
	} else {
		t.Errorf("reload took %s, too long to check the %s grace period", reloaded, rotationGrace)
	}
	// ...and are refused once it is over, not before. Expiry is a point in
	// time, not an event: poll it about once a second.
	var refusedAt time.Duration
	if err := pollEvery(ctx, time.Second, func() error {
		st := tryOpen(oldSigner)
		if st == http.StatusSwitchingProtocols {
			return errStatus(st)
		}
		if st != http.StatusUnauthorized {
			t.Errorf("old-key token refused with %d, want 401", st)
		}
		refusedAt = time.Since(swapped)
		return nil
	}); err != nil {
		t.Fatalf("old-key tokens were never refused: %v", err)
	}
	if refusedAt < rotationGrace {
		t.Errorf("old key refused %s after the swap, before its %s grace period ended", refusedAt, rotationGrace)
	}
	if refusedAt > rotationGrace+30*time.Second {
		t.Errorf("old key still accepted %s after the swap, long past its %s grace period", refusedAt, rotationGrace)
	}
	t.Logf("old key refused %s after the swap (grace %s)", refusedAt.Round(time.Millisecond), rotationGrace)
	if st := tryOpen(newSigner); st != http.StatusSwitchingProtocols {
		t.Errorf("new-key token refused (%d) after the old key expired", st)
	}

	// The session opened under the old key streams on.
	live.Send(t, "echo after-$((2+2))\r")
	live.WaitOutput(t, "after-4", time.Minute)
	if err := live.Problems(); err != nil {
		t.Error(err)
	}
}

// pollEvery is pollUntil with a chosen period, for checks that cost a
// session each.
func pollEvery(ctx context.Context, period time.Duration, fn func() error) error {
	return poll.Until(ctx, period, time.Hour, func(context.Context) error { return fn() })
}

type errStatus int

func (e errStatus) Error() string { return "upgrade answered " + http.StatusText(int(e)) }
