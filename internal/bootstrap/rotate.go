package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientretry "k8s.io/client-go/util/retry"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeclient"
)

// Rotation without a refusal window (docs/tokens.md, "Rotating keys"):
//
//  1. RotateSecret adds a key named after its creation time and keeps the
//     previous ones, so proxies accept both once the kubelet has synced.
//  2. Signers pick the newest key older than the propagation delay (the
//     longest a kubelet takes to sync a Secret volume), so no token is signed
//     with a key a proxy may not have yet: SelectSigningKey.
//  3. A key is pruned once no valid token can still carry it: its successor
//     became the signing key (successor's creation + propagation delay) and
//     the longest token signed before that has expired (+ max TTL + leeway).

// DefaultPropagationDelay is how long after a Secret changes every kubelet is
// assumed to have updated its volume: the kubelet's sync period (1 min) plus
// its cache TTL (1 min by default, configMapAndSecretChangeDetectionStrategy
// Watch makes it faster but not slower).
const DefaultPropagationDelay = 2 * time.Minute

const (
	rotatedKeyPrefix = "key-"
	rotatedKeyLayout = "20060102T150405Z"
	// keyNameResolution: a name records its key's creation to the second,
	// so the key may have been made up to this much later. Ages are
	// counted from the end of that second, erring on the safe side.
	keyNameResolution = time.Second
)

// KeyName is the Secret data key (and so the file name in the proxy's key
// directory) for a key created at t: "key-20261202T031500Z", in UTC, to the
// second.
func KeyName(t time.Time) string { return rotatedKeyPrefix + t.UTC().Format(rotatedKeyLayout) }

// KeyCreated returns the creation time recorded in a key's name; ok is false
// for any other name (the bootstrap's first key "key", an operator's own),
// which counts as older than every named key.
func KeyCreated(name string) (t time.Time, ok bool) {
	rest, found := strings.CutPrefix(name, rotatedKeyPrefix)
	if !found {
		return time.Time{}, false
	}
	t, err := time.Parse(rotatedKeyLayout, rest)
	return t, err == nil
}

// sortKeys orders key names oldest first: names without a time first (by
// name), then by the time they record.
func sortKeys(names []string) {
	slices.SortFunc(names, func(a, b string) int {
		ta, _ := KeyCreated(a)
		tb, _ := KeyCreated(b)
		if c := ta.Compare(tb); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
}

// RotateOptions configures RotateSecret; the embedded Options name the
// Secret and the retry budget (KeyName is unused: names are KeyName(now)).
type RotateOptions struct {
	Options
	// MaxTTL and Leeway are the proxies' --max-ttl and --leeway: a token
	// lives at most MaxTTL and is accepted Leeway past its expiry.
	MaxTTL, Leeway time.Duration
	// PropagationDelay is the signers' delay (DefaultPropagationDelay).
	PropagationDelay time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// RotateResult says what RotateSecret did; names only, never key material.
type RotateResult struct {
	Added  string
	Kept   []string // previous keys still needed, oldest first
	Pruned []string
}

// Prunable returns the keys of names (the data keys of the Secret after
// adding the newest) that no valid token can carry any more at now: every
// key but the newest two whose successor has been the signing key for longer
// than a token lives (ages counted from the end of the second a name
// records). The two newest always stay: the newest is not yet
// signed with, the one before it is what signers use now.
func Prunable(names []string, now time.Time, propagation, maxTTL, leeway time.Duration) []string {
	sorted := slices.Clone(names)
	sortKeys(sorted)
	var out []string
	for i := 0; i+2 < len(sorted); i++ {
		succ, ok := KeyCreated(sorted[i+1])
		if !ok {
			continue // successor's age unknown: keep
		}
		if !now.Before(succ.Add(keyNameResolution + propagation + maxTTL + leeway)) {
			out = append(out, sorted[i])
		}
	}
	return out
}

// RotateSecret adds a fresh key named KeyName(now) to the Secret (creating
// the Secret if absent) and prunes the keys Prunable names, in one update
// guarded by the Secret's resourceVersion.
func RotateSecret(ctx context.Context, client kubeclient.SecretsGetter, opts RotateOptions) (RotateResult, error) {
	if err := opts.defaults(); err != nil {
		return RotateResult{}, err
	}
	if opts.MaxTTL <= 0 || opts.Leeway < 0 || opts.PropagationDelay < 0 {
		return RotateResult{}, &Error{Kind: Invalid, Msg: "rotation needs --max-ttl above 0 and no negative --leeway or --propagation-delay"}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger.With("namespace", opts.Namespace, "secret", opts.SecretName)
	secrets := client.Secrets(opts.Namespace)
	var res RotateResult
	err := clientretry.RetryOnConflict(clientretry.DefaultBackoff, func() error {
		res = RotateResult{}
		var cur *corev1.Secret
		err := retry(ctx, opts.Options, "get", func(ctx context.Context) error {
			s, err := secrets.Get(ctx, opts.SecretName, metav1.GetOptions{})
			cur = s
			return err
		})
		absent := apierrors.IsNotFound(err)
		if err != nil && !absent {
			return explain(err, "get", opts.Options)
		}
		now := opts.Now()
		name := KeyName(now)
		key, err := newKey(opts.Rand)
		if err != nil {
			return err
		}
		defer clear(key)
		if absent {
			s := newSecret(opts.Options, name, key)
			err := retry(ctx, opts.Options, "create", func(ctx context.Context) error {
				_, err := secrets.Create(ctx, s, metav1.CreateOptions{})
				return err
			})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("secrets"), opts.SecretName, err) // created meanwhile: rotate that one
			}
			if err != nil {
				return explain(err, "create", opts.Options)
			}
			res.Added = name
			return nil
		}
		if _, dup := cur.Data[name]; dup {
			return &Error{Kind: Invalid, Msg: fmt.Sprintf("Secret %s/%s already has a key %q made this second; rotate again in a second", opts.Namespace, opts.SecretName, name)}
		}
		for k, v := range cur.Data {
			if _, err := hmac.ParseKey(v); err != nil {
				log.Warn("existing key cannot be loaded by the proxy; left as it is", "key", k, "error", err.Error())
			}
		}
		data := make(map[string][]byte, len(cur.Data)+1)
		names := []string{name}
		for k, v := range cur.Data {
			data[k] = v
			names = append(names, k)
		}
		data[name] = key
		res.Pruned = Prunable(names, now, opts.PropagationDelay, opts.MaxTTL, opts.Leeway)
		for _, k := range res.Pruned {
			delete(data, k)
		}
		for _, k := range sortedKeys(data) {
			if k != name {
				res.Kept = append(res.Kept, k)
			}
		}
		upd := cur.DeepCopy()
		upd.Data = data
		if upd.Annotations == nil {
			upd.Annotations = map[string]string{}
		}
		upd.Annotations[rotateAnnotation] = rotateHint
		err = retry(ctx, opts.Options, "update", func(ctx context.Context) error {
			_, err := secrets.Update(ctx, upd, metav1.UpdateOptions{})
			return err
		})
		if apierrors.IsConflict(err) {
			return err
		}
		if err != nil {
			return explain(err, "update", opts.Options)
		}
		res.Added = name
		return nil
	})
	if err != nil {
		if apierrors.IsConflict(err) {
			return RotateResult{}, &Error{Kind: Failed, Err: err, Msg: fmt.Sprintf("Secret %s/%s kept changing while rotating", opts.Namespace, opts.SecretName)}
		}
		return RotateResult{}, err
	}
	log.Info("rotated", "added", res.Added, "kept", res.Kept, "pruned", res.Pruned)
	return res, nil
}

func sortedKeys(m map[string][]byte) []string {
	names := slices.Collect(maps.Keys(m))
	sortKeys(names)
	return names
}

// SelectSigningKey returns the file in dir (a key directory laid out as the
// proxy reads it: every visible file one key) that a signer should use at
// now: the newest key older than propagation (counted from the end of the
// second its name records). A key without a time in its
// name counts as old enough. If every key is younger (a Secret created by a
// rotation moments ago), the oldest is returned with fallback set: proxies
// that started after the Secret existed have it, and nothing better exists.
func SelectSigningKey(dir string, now time.Time, propagation time.Duration) (name string, fallback bool, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", false, err
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
			continue // ..data, ..<timestamp> and hidden files, as the keyring skips them
		}
		names = append(names, e.Name())
	}
	if len(names) == 0 {
		return "", false, errors.New("no key files in " + dir)
	}
	sortKeys(names)
	for i := len(names) - 1; i >= 0; i-- {
		t, timed := KeyCreated(names[i])
		if !timed || !now.Before(t.Add(keyNameResolution+propagation)) {
			return names[i], false, nil
		}
	}
	return names[0], true, nil
}
