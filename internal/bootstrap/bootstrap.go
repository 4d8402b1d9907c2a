// Package bootstrap creates the proxy's HMAC key Secret when it does not exist.
//
// It runs as a Helm pre-install/pre-upgrade hook (the `bootstrap-secret`
// subcommand of the proxy's own binary), so the DaemonSet never mounts a Secret
// that nothing created, and an existing key (an operator's own, or one made by
// an earlier run) is never replaced: replacing it would invalidate every token
// already handed out. Rotation is explicit: RotateSecret (bootstrap-secret
// --rotate) adds a key beside the old ones (rotate.go); deleting the Secret and
// running the hook again also works, with a refusal window.
//
// The hook's Role grants exactly `get` on the one Secret name and `create` on
// secrets (create cannot be restricted by name), so the logic is get-then-create
// and never update or list. A 409 on create means another writer won the race
// and its key is kept. Rotation also needs update on that one Secret.
package bootstrap

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeclient"
)

// KeyBytes is the size of a generated key: RFC 2104 advises an HMAC key at
// least as long as the hash output, 32 bytes for SHA-256 (hmac.MinKeyLen).
const KeyBytes = hmac.MinKeyLen

// Defaults shared with the chart and the proxy's --key-dir layout.
const (
	DefaultSecretName = "k8s-ws-proxy-hmac"
	DefaultKeyName    = "key"
)

// Outcome says what EnsureSecret found or did.
type Outcome string

const (
	// Exists: the Secret was already there and was left untouched.
	Exists Outcome = "exists"
	// Created: this run created the Secret with a fresh key.
	Created Outcome = "created"
	// CreatedByOther: the create lost a race (409) to another writer, whose
	// Secret is kept.
	CreatedByOther Outcome = "created-by-other"
)

// ErrorKind classifies failures so the command can print one clear line and
// tests can assert on the class rather than on wording.
type ErrorKind string

const (
	// Forbidden: the API server answered 403; RBAC is missing a rule.
	Forbidden ErrorKind = "forbidden"
	// Unauthorized: the API server answered 401; the credentials are bad.
	Unauthorized ErrorKind = "unauthorized"
	// Unreachable: no answer from the API server within the retry budget.
	Unreachable ErrorKind = "unreachable"
	// Invalid: the existing Secret cannot serve as the key (no such data key),
	// or the options are wrong.
	Invalid ErrorKind = "invalid"
	// Failed: any other API error.
	Failed ErrorKind = "failed"
)

// Error is returned by EnsureSecret for every failure.
type Error struct {
	Kind ErrorKind
	// Msg is the operator-facing explanation, naming what to fix.
	Msg string
	Err error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the ErrorKind of err, or "" when err is not an *Error.
func KindOf(err error) ErrorKind {
	var be *Error
	if errors.As(err, &be) {
		return be.Kind
	}
	return ""
}

// Options configures EnsureSecret. Zero values take the defaults noted.
type Options struct {
	Namespace  string // required
	SecretName string // DefaultSecretName
	KeyName    string // DefaultKeyName

	// Attempts bounds the tries per API call when the server is unreachable
	// or answers 429/5xx (default 5). RequestTimeout bounds each try (default
	// 10s). Backoff is the first wait between tries, doubled each time up to
	// 8x (default 1s). With the defaults an unreachable server fails within
	// about a minute, well inside Helm's default 5 minute hook timeout.
	Attempts       int
	RequestTimeout time.Duration
	Backoff        time.Duration

	// Rand is the key's entropy source (crypto/rand.Reader); tests replace it
	// only to prove a failing reader fails the run rather than making a weak key.
	Rand io.Reader
	// Logger receives JSON-friendly structured logs; nil discards them.
	Logger *slog.Logger
	// APIServer names the server in "unreachable" messages (e.g. the host from
	// the rest config); optional.
	APIServer string
}

func (o *Options) defaults() error {
	if o.Namespace == "" {
		return &Error{Kind: Invalid, Msg: "no namespace: pass --namespace or set POD_NAMESPACE (the chart sets it from the downward API)"}
	}
	if o.SecretName == "" {
		o.SecretName = DefaultSecretName
	}
	if o.KeyName == "" {
		o.KeyName = DefaultKeyName
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// EnsureSecret makes sure the Secret exists, creating it with KeyBytes random
// bytes if it does not. It never logs or returns key material.
func EnsureSecret(ctx context.Context, client kubeclient.SecretsGetter, opts Options) (Outcome, error) {
	if err := opts.defaults(); err != nil {
		return "", err
	}
	log := opts.Logger.With("namespace", opts.Namespace, "secret", opts.SecretName)
	secrets := client.Secrets(opts.Namespace)

	var existing *corev1.Secret
	err := retry(ctx, opts, "get", func(ctx context.Context) error {
		s, err := secrets.Get(ctx, opts.SecretName, metav1.GetOptions{})
		existing = s
		return err
	})
	switch {
	case err == nil:
		return Exists, checkExisting(existing, opts, log)
	case apierrors.IsNotFound(err):
		// Absent: create below.
	default:
		return "", explain(err, "get", opts)
	}

	key, err := newKey(opts.Rand)
	if err != nil {
		return "", err
	}
	secret := newSecret(opts, opts.KeyName, key)
	err = retry(ctx, opts, "create", func(ctx context.Context) error {
		_, err := secrets.Create(ctx, secret, metav1.CreateOptions{})
		return err
	})
	clear(key)
	switch {
	case err == nil:
		log.Info("created", "key", opts.KeyName, "bytes", KeyBytes)
		return Created, nil
	case apierrors.IsAlreadyExists(err):
		// Another writer (a parallel hook, an operator) won between our get
		// and create; its key stands and ours was never stored.
		log.Info("exists", "detail", "created concurrently by another writer; kept")
		return CreatedByOther, nil
	default:
		return "", explain(err, "create", opts)
	}
}

// The annotation that tells whoever finds the Secret how to rotate it.
const (
	rotateAnnotation = "k8s-ws-proxy.io/rotate"
	rotateHint       = "run k8s-ws-proxy bootstrap-secret --rotate (the chart's hmacSecret.rotation) to rotate without refusals; deleting this Secret also rotates but refuses new tokens until every proxy has the new key (docs/chart.md)"
)

func newSecret(opts Options, keyName string, key []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      opts.SecretName,
			Namespace: opts.Namespace,
			Labels: map[string]string{
				"app.kubernetes.io/name":       "k8s-ws-proxy",
				"app.kubernetes.io/component":  "hmac-key",
				"app.kubernetes.io/managed-by": "k8s-ws-proxy-bootstrap",
			},
			Annotations: map[string]string{rotateAnnotation: rotateHint},
		},
		Type: corev1.SecretTypeOpaque,
		// client-go base64-encodes []byte values on the wire.
		Data: map[string][]byte{keyName: key},
	}
}

// newKey draws KeyBytes from r until the proxy's keyring would load them
// unchanged: it trims trailing ASCII whitespace from key files, so a raw key
// ending in such a byte (about 2% of draws) would lose bytes in the proxy but
// not in a control plane that reads the Secret, and the MACs would differ.
// Redrawing the whole key keeps it uniform over the accepted keys.
func newKey(r io.Reader) ([]byte, error) {
	key := make([]byte, KeyBytes)
	for range 64 {
		if _, err := io.ReadFull(r, key); err != nil {
			return nil, &Error{Kind: Failed, Msg: "reading random bytes for the key", Err: err}
		}
		if parsed, err := hmac.ParseKey(key); err == nil && len(parsed) == len(key) {
			return key, nil
		}
	}
	// 64 rejections in a row mean the source is not random.
	return nil, &Error{Kind: Failed, Msg: "the random source keeps producing keys the proxy would trim; refusing to store one"}
}

// checkExisting leaves the Secret alone but refuses one the proxy could not
// load (its keyring wants at least KeyBytes after trailing whitespace is
// trimmed), so the failure shows at install time instead of as a DaemonSet
// that never becomes ready.
func checkExisting(s *corev1.Secret, opts Options, log *slog.Logger) error {
	v, ok := s.Data[opts.KeyName]
	if !ok {
		return &Error{Kind: Invalid, Msg: fmt.Sprintf(
			"Secret %s/%s exists but has no data key %q; add it (%d random bytes) or delete the Secret so the hook creates one",
			opts.Namespace, opts.SecretName, opts.KeyName, KeyBytes)}
	}
	if _, err := hmac.ParseKey(v); err != nil {
		// ParseKey's error names lengths, never key material.
		return &Error{Kind: Invalid, Err: err, Msg: fmt.Sprintf(
			"Secret %s/%s exists but the proxy cannot load its key %q; replace it (at least %d random bytes) or delete the Secret so the hook creates one",
			opts.Namespace, opts.SecretName, opts.KeyName, hmac.MinKeyLen)}
	}
	log.Info("exists", "detail", "left untouched")
	return nil
}

// retry runs call until it succeeds, returns a definitive API answer, or the
// attempt budget is spent. Only transport failures and 429/5xx are retried:
// a 403 will not fix itself within a hook's lifetime. The waits are 1x, 2x,
// 4x, then 8x Backoff (apimachinery's Backoff with a Cap, through wait's
// context-aware loop: client-go's retry.OnError would sleep through a
// cancelled context).
func retry(ctx context.Context, opts Options, verb string, call func(context.Context) error) error {
	delay := wait.Backoff{Duration: opts.Backoff, Factor: 2, Steps: opts.Attempts, Cap: 8 * opts.Backoff}.DelayFunc()
	var err error
	attempt := 0
	stopped := delay.Until(ctx, true, true, func(ctx context.Context) (bool, error) {
		attempt++
		cctx, cancel := context.WithTimeout(ctx, opts.RequestTimeout)
		err = call(cctx)
		cancel()
		if err == nil || !transient(err) || attempt >= opts.Attempts {
			return true, nil
		}
		opts.Logger.Warn("retrying", "verb", verb, "attempt", attempt, "error", err.Error())
		return false, nil
	})
	if stopped != nil { // the context ended the wait
		return errors.Join(err, stopped)
	}
	return err
}

// transient reports whether err may go away by itself: no HTTP answer at all,
// or an answer saying the server is overloaded or restarting.
func transient(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return true // transport error: refused, reset, DNS, TLS handshake, timeout
	}
	return apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTimeout(err) || apierrors.IsServiceUnavailable(err) ||
		apierrors.IsInternalError(err) || apierrors.IsUnexpectedServerError(err)
}

// explain turns an API failure into the operator-facing message.
func explain(err error, verb string, opts Options) error {
	switch {
	case apierrors.IsForbidden(err):
		rule := fmt.Sprintf("%q on secrets named %q", verb, opts.SecretName)
		if verb == "create" {
			// create is checked before the object exists, so a Role can only
			// grant it without resourceNames.
			rule = `"create" on secrets (a rule without resourceNames)`
		}
		return &Error{Kind: Forbidden, Err: err, Msg: fmt.Sprintf(
			"forbidden: RBAC does not allow this ServiceAccount to %s Secret %s/%s; its Role in namespace %s needs %s (the chart's bootstrap Role grants exactly that)",
			verb, opts.Namespace, opts.SecretName, opts.Namespace, rule)}
	case apierrors.IsUnauthorized(err):
		return &Error{Kind: Unauthorized, Err: err, Msg: fmt.Sprintf(
			"unauthorized: the API server rejected this pod's credentials while trying to %s Secret %s/%s (check the ServiceAccount token mount)",
			verb, opts.Namespace, opts.SecretName)}
	case transient(err):
		where := "the Kubernetes API server"
		if opts.APIServer != "" {
			where += " at " + redactURL(opts.APIServer)
		}
		return &Error{Kind: Unreachable, Err: err, Msg: fmt.Sprintf(
			"cannot reach %s to %s Secret %s/%s after %d attempts (check network policies egress to the API server and the API server's health)",
			where, verb, opts.Namespace, opts.SecretName, opts.Attempts)}
	default:
		return &Error{Kind: Failed, Err: err, Msg: fmt.Sprintf("%s Secret %s/%s", verb, opts.Namespace, opts.SecretName)}
	}
}

// redactURL drops any user info from a server URL before it is printed.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return s
	}
	u.User = nil
	return u.Redacted()
}
