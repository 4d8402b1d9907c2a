package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
		return bootstrapSecret(ctx, t, ns, kubeconfig, args, secretName)[keyName]
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

// Scaled-down production timings: a token lives 6s (+1s leeway), a Secret
// change reaches the proxy's volume 1.5s after it is written (the kubelet's
// sync), the control plane's own copy 300ms after; signers wait 3s, longer
// than any volume takes (key names record the second, so a key may be up to
// 1s younger than its name says; signers count from the end of that second).
const (
	rwMaxTTL      = 6 * time.Second
	rwLeeway      = time.Second
	rwProxyLag    = 1500 * time.Millisecond
	rwSignerLag   = 300 * time.Millisecond
	rwPropagation = 3 * time.Second
	// After this long a key's successor has been signed with for longer
	// than a token lives: the next rotation prunes it.
	rwPruneAfter = rwPropagation + rwMaxTTL + rwLeeway + time.Second
)

// secretProjector delivers the Secret, read from the API server, into a key
// directory the way the kubelet updates a Secret volume: after a lag, with
// the atomic ..data symlink swap. Swaps run on the test goroutine (pump).
type secretProjector struct {
	dir     string
	lag     time.Duration
	pending []pendingSwap
}

type pendingSwap struct {
	at   time.Time
	data map[string][]byte
}

func (p *secretProjector) schedule(data map[string][]byte) {
	p.pending = append(p.pending, pendingSwap{at: time.Now().Add(p.lag), data: maps.Clone(data)})
}

// runVolumes performs the volumes' swaps as they fall due, until deadline:
// it waits for the next swap's time (or the deadline), not for a guess.
func runVolumes(t *testing.T, deadline time.Time, vols ...*secretProjector) {
	t.Helper()
	for {
		next := deadline
		for _, v := range vols {
			for len(v.pending) > 0 && !time.Now().Before(v.pending[0].at) {
				filewatchtest.SwapSecretDir(t, v.dir, v.pending[0].data)
				v.pending = v.pending[1:]
			}
			if len(v.pending) > 0 && v.pending[0].at.Before(next) {
				next = v.pending[0].at
			}
		}
		if !time.Now().Before(deadline) {
			return
		}
		timer := time.NewTimer(time.Until(next))
		select {
		case <-t.Context().Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// sessionLoop opens sessions one after another, each with a token minted by
// `token mint --key-dir` from the signer's copy of the Secret, until stopped.
type sessionLoop struct {
	mu       sync.Mutex
	attempts int
	refused  []string // status and time of each refusal
	kids     map[string]int
	errs     []string
	stop     chan struct{}
	done     chan struct{}
}

func startSessionLoop(p *proxyProc, signerDir string, propagation time.Duration) *sessionLoop {
	l := &sessionLoop{kids: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			tok, err := mintFromDir(signerDir, propagation)
			if err != nil {
				l.mu.Lock()
				l.errs = append(l.errs, err.Error())
				l.mu.Unlock()
				continue
			}
			g, resp, err := testenv.DialGuacd(p.Addr, workloadNamespace, tok, workloadContainer, "true")
			l.mu.Lock()
			l.attempts++
			l.kids[tokenKID(tok)]++
			switch {
			case err == nil:
				g.Drop()
			case resp != nil:
				l.refused = append(l.refused, time.Now().Format("15:04:05.000")+" "+resp.Status)
			default:
				l.errs = append(l.errs, err.Error())
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *sessionLoop) finish() (attempts int, refused []string, kids map[string]int, errs []string) {
	close(l.stop)
	<-l.done
	return l.attempts, l.refused, l.kids, l.errs
}

// mintFromDir runs the proxy binary's own token mint, as a control plane
// would, for a session of `true` on the workload.
func mintFromDir(dir string, propagation time.Duration) (string, error) {
	cmd := osexec.Command(proxyBin, "token", "mint", "--key-dir", dir, "--propagation-delay", propagation.String(),
		"--namespace", workloadNamespace, "--pod", workloadPod, "--container", workloadContainer, "--node", workloadNode,
		"--command", "true", "--tty", "--stdin", "--ttl", rwMaxTTL.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", &mintError{err: err, stderr: stderr.String()}
	}
	return strings.TrimSpace(string(out)), nil
}

type mintError struct {
	err    error
	stderr string
}

func (e *mintError) Error() string { return "token mint: " + e.err.Error() + ": " + e.stderr }

// tokenKID is the kid of a token's header (which key signed it).
func tokenKID(tok string) string {
	head, _, _ := strings.Cut(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return "?"
	}
	var h struct {
		Kid string `json:"kid"`
	}
	_ = json.Unmarshal(raw, &h)
	return h.Kid
}

// TestKeyRotationWithoutRefusals runs the windowless procedure against the
// real API server: the chart's rotating hook (bootstrap-secret --rotate, as
// the hook's ServiceAccount with the chart's Role) rotates the Secret three
// times; the Secret reaches the proxy's key directory and the signer's the
// kubelet way, each with its lag; a client mints every token with `token mint
// --key-dir` and connects continuously through it all. Not one session is
// refused, every key is used in turn, and a pruned key's tokens stop working
// once the proxy's grace period for it is over. The seed's way (sign with
// the newest key at once) is shown to be refused in the same setup.
func TestKeyRotationWithoutRefusals(t *testing.T) {
	const ns = "rotation-nowindow"
	h := applyHook(t, ns,
		"--set", "hmacSecret.rotation.enabled=true",
		"--set", "hmacSecret.rotation.propagationDelay="+rwPropagation.String(),
		"--set", "proxy.maxTTL="+rwMaxTTL.String(), "--set", "proxy.leeway="+rwLeeway.String())
	args, secretName := h.args, h.secretName
	if !slices.Contains(args, "--rotate") {
		t.Fatalf("the rotating hook's args lack --rotate: %q", args)
	}
	waitAuthorized(t, ns, h.sa, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "update", Resource: "secrets", Name: secretName}, true)
	kubeconfig := serviceAccountKubeconfig(t, ns, h.sa)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	rotate := func() map[string][]byte {
		t.Helper()
		return bootstrapSecret(ctx, t, ns, kubeconfig, args, secretName)
	}

	p := startProxy(t, proxyOptions{extra: []string{"--max-ttl", rwMaxTTL.String(), "--leeway", rwLeeway.String()}})
	signerDir := filepath.Join(t.TempDir(), "signer-keys")
	proxyVol := &secretProjector{dir: p.keyDir, lag: rwProxyLag}
	signerVol := &secretProjector{dir: signerDir, lag: rwSignerLag}

	// The first run creates the Secret; both volumes start with it, as
	// pods started after it existed do.
	data := rotate()
	first := slices.Collect(maps.Keys(data))
	if len(first) != 1 {
		t.Fatalf("first rotation made %v", first)
	}
	filewatchtest.SwapSecretDir(t, p.keyDir, data)
	filewatchtest.SwapSecretDir(t, signerDir, data)
	if err := pollUntil(ctx, func() error {
		tok, err := mintFromDir(signerDir, rwPropagation)
		if err != nil {
			return err
		}
		g, resp, err := testenv.DialGuacd(p.Addr, workloadNamespace, tok, workloadContainer, "true")
		if err != nil {
			return errStatus(statusOf(resp))
		}
		g.Drop()
		return nil
	}); err != nil {
		t.Fatalf("the first key never worked: %v", err)
	}

	loop := startSessionLoop(p, signerDir, rwPropagation)
	keyA := data[first[0]]
	var pruned []string
	// Three rotations, each after the previous key's prune window: the
	// second prunes the first key, the third the second.
	for i := range 3 {
		if i > 0 {
			runVolumes(t, time.Now().Add(rwPruneAfter), proxyVol, signerVol)
		}
		before := data
		data = rotate()
		for k := range before {
			if _, ok := data[k]; !ok {
				pruned = append(pruned, k)
			}
		}
		proxyVol.schedule(data)
		signerVol.schedule(data)
	}
	// Until the last rotation has reached both volumes and been signed with.
	runVolumes(t, time.Now().Add(rwPropagation+2*time.Second), proxyVol, signerVol)
	attempts, refused, kids, errs := loop.finish()
	t.Logf("zero-window rotation: %d sessions attempted, %d refused, tokens per key %v, keys pruned %v", attempts, len(refused), kids, pruned)
	if len(errs) > 0 {
		t.Errorf("%d sessions failed without an HTTP answer or could not be minted; first: %s", len(errs), errs[0])
	}
	if len(refused) > 0 {
		t.Errorf("%d of %d sessions refused during rotation: %v", len(refused), attempts, refused)
	}
	if len(kids) < 4 {
		t.Errorf("tokens were signed with %d keys (%v); three rotations should have moved the signer through 4", len(kids), kids)
	}
	if len(pruned) != 2 || pruned[0] != first[0] {
		t.Errorf("pruned %v; want the first two keys, the first being %s", pruned, first[0])
	}
	if attempts < 12 {
		t.Errorf("only %d sessions attempted in %s; too few to show anything", attempts, 2*rwPruneAfter)
	}

	// The first key was pruned a full window ago: the proxy's grace for it
	// (max TTL + leeway after it left the volume) is over.
	oldSigner, err := hmac.NewSigner(keyA)
	if err != nil {
		t.Fatal(err)
	}
	c := p.claims(true, "true")
	c.ExpiresAt.Time = c.IssuedAt.Add(rwMaxTTL)
	if g, resp, err := testenv.DialGuacd(p.Addr, workloadNamespace, testenv.Mint(t, oldSigner, c), workloadContainer, "true"); err == nil {
		g.Drop()
		t.Error("a token of the pruned first key still opens sessions")
	} else if st := statusOf(resp); st != http.StatusUnauthorized {
		t.Errorf("pruned key's token: %v (status %d), want 401", err, st)
	}

	// The seed's way in the same setup: sign with the newest key as soon as
	// the control plane has it. Tokens signed inside the proxy's lag are
	// refused: the window this procedure removes.
	// The kubelet's lag varies from node to node; this proxy's is 4s this
	// time, so the window holds several sessions.
	proxyVol.lag = 4 * time.Second
	seed := startSessionLoop(p, signerDir, 0)
	rotate2 := rotate()
	proxyVol.schedule(rotate2)
	signerVol.schedule(rotate2)
	runVolumes(t, time.Now().Add(proxyVol.lag+time.Second), proxyVol, signerVol)
	sAttempts, sRefused, _, _ := seed.finish()
	t.Logf("signing with the newest key at once: %d sessions attempted, %d refused", sAttempts, len(sRefused))
	if len(sRefused) == 0 {
		t.Errorf("signing with the newest key at once was never refused in %d sessions: the test cannot see a window", sAttempts)
	}
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// bootstrapSecret runs bootstrap-secret with args as the hook's
// ServiceAccount (kubeconfig), as the chart's hook Job does, and returns the
// Secret's data after that run.
func bootstrapSecret(ctx context.Context, t *testing.T, ns, kubeconfig string, args []string, secretName string) map[string][]byte {
	t.Helper()
	if r := runBootstrap(t, ns, kubeconfig, args); r.exitCode != 0 {
		t.Fatalf("bootstrap-secret %q exited %d:\n%s", args, r.exitCode, r.stderr)
	}
	s, err := api.AdminClient().CoreV1().Secrets(ns).Get(ctx, secretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Data
}
