package bootstrap

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeclient"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const ns = "proxy-system"

var secretsGR = schema.GroupResource{Resource: "secrets"}

// testOpts returns options with a fast retry budget and a captured JSON log.
func testOpts(buf *bytes.Buffer) Options {
	return Options{
		Namespace: ns,
		Attempts:  3,
		Backoff:   time.Millisecond,
		Logger:    slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func getSecret(t *testing.T, c kubernetes.Interface, name string) *corev1.Secret {
	t.Helper()
	s, err := c.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return s
}

// typed is client-go's typed core/v1 client (the fake clientset's) as the
// narrower kubeclient.SecretsGetter.
type typed struct{ corev1client.CoreV1Interface }

func (t typed) Secrets(ns string) kubeclient.SecretInterface { return t.CoreV1Interface.Secrets(ns) }

func countActions(c *fake.Clientset, verb string) int {
	n := 0
	for _, a := range c.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == "secrets" {
			n++
		}
	}
	return n
}

// assertNoKeyInLog fails if the key, raw or base64, appears in the log.
func assertNoKeyInLog(t *testing.T, log string, key []byte) {
	t.Helper()
	for _, form := range []string{
		string(key),
		base64.StdEncoding.EncodeToString(key),
		base64.RawStdEncoding.EncodeToString(key),
		base64.URLEncoding.EncodeToString(key),
		base64.RawURLEncoding.EncodeToString(key),
	} {
		if strings.Contains(log, form) {
			t.Fatalf("log contains the key (%q):\n%s", form, log)
		}
	}
}

func TestAbsentIsCreated(t *testing.T) {
	var buf bytes.Buffer
	c := fake.NewClientset()
	out, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, testOpts(&buf))
	if err != nil || out != Created {
		t.Fatalf("EnsureSecret = %q, %v; want created", out, err)
	}
	s := getSecret(t, c, DefaultSecretName)
	key := s.Data[DefaultKeyName]
	if len(key) != KeyBytes {
		t.Fatalf("key length %d, want %d", len(key), KeyBytes)
	}
	if bytes.Equal(key, make([]byte, KeyBytes)) {
		t.Fatal("key is all zero bytes")
	}
	if s.Type != corev1.SecretTypeOpaque {
		t.Fatalf("type %q", s.Type)
	}
	if len(s.Data) != 1 {
		t.Fatalf("data keys %v, want only %q", s.Data, DefaultKeyName)
	}
	if s.Immutable != nil && *s.Immutable {
		t.Fatal("Secret must stay mutable: the kubelet does not refresh immutable Secret volumes")
	}
	assertNoKeyInLog(t, buf.String(), key)
	if !strings.Contains(buf.String(), `"msg":"created"`) {
		t.Fatalf("no created log line:\n%s", buf.String())
	}

	// A second run (the next upgrade) leaves it byte-identical.
	out, err = EnsureSecret(context.Background(), typed{c.CoreV1()}, testOpts(&buf))
	if err != nil || out != Exists {
		t.Fatalf("second EnsureSecret = %q, %v; want exists", out, err)
	}
	if again := getSecret(t, c, DefaultSecretName).Data[DefaultKeyName]; !bytes.Equal(again, key) {
		t.Fatal("second run changed the key")
	}
	if n := countActions(c, "create"); n != 1 {
		t.Fatalf("%d creates, want 1", n)
	}
	if n := countActions(c, "update") + countActions(c, "patch") + countActions(c, "delete"); n != 0 {
		t.Fatalf("%d update/patch/delete calls; the hook's Role grants none", n)
	}
}

func TestKeysDiffer(t *testing.T) {
	var keys [][]byte
	for range 2 {
		c := fake.NewClientset()
		if _, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, Options{Namespace: ns}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, getSecret(t, c, DefaultSecretName).Data[DefaultKeyName])
	}
	if bytes.Equal(keys[0], keys[1]) {
		t.Fatal("two bootstraps produced the same key")
	}
}

func TestCustomNames(t *testing.T) {
	c := fake.NewClientset()
	o := Options{Namespace: ns, SecretName: "other", KeyName: "hmac"}
	if out, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, o); err != nil || out != Created {
		t.Fatalf("%q, %v", out, err)
	}
	if len(getSecret(t, c, "other").Data["hmac"]) != KeyBytes {
		t.Fatal("custom key name not used")
	}
}

func TestExistingIsUntouched(t *testing.T) {
	operatorKey := bytes.Repeat([]byte("k"), 48)
	existing := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultSecretName, Namespace: ns, ResourceVersion: "7",
			Labels: map[string]string{"owner": "operator"}},
		Data: map[string][]byte{DefaultKeyName: operatorKey, "extra": []byte("x")},
	}
	c := fake.NewClientset(existing)
	var buf bytes.Buffer
	out, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, testOpts(&buf))
	if err != nil || out != Exists {
		t.Fatalf("EnsureSecret = %q, %v; want exists", out, err)
	}
	got := getSecret(t, c, DefaultSecretName)
	if !bytes.Equal(got.Data[DefaultKeyName], operatorKey) || string(got.Data["extra"]) != "x" ||
		got.Labels["owner"] != "operator" || got.ResourceVersion != "7" {
		t.Fatalf("existing Secret changed: %+v", got)
	}
	if n := countActions(c, "create"); n != 0 {
		t.Fatalf("%d creates on an existing Secret", n)
	}
	if !strings.Contains(buf.String(), `"msg":"exists"`) {
		t.Fatalf("no exists log line:\n%s", buf.String())
	}
	assertNoKeyInLog(t, buf.String(), operatorKey)
}

func TestExistingShortKeyFailsUntouched(t *testing.T) {
	for name, v := range map[string][]byte{
		"empty":                 {},
		"16 bytes":              []byte("0123456789abcdef"),
		"31 bytes plus newline": []byte("0123456789abcdef0123456789abcde\n"),
	} {
		t.Run(name, func(t *testing.T) {
			c := fake.NewClientset(&corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: DefaultSecretName, Namespace: ns},
				Data:       map[string][]byte{DefaultKeyName: v},
			})
			var buf bytes.Buffer
			_, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, testOpts(&buf))
			if KindOf(err) != Invalid || !strings.Contains(err.Error(), "cannot load its key") || !strings.Contains(err.Error(), "need at least 32") {
				t.Fatalf("err = %v; want invalid (short key)", err)
			}
			if !bytes.Equal(getSecret(t, c, DefaultSecretName).Data[DefaultKeyName], v) || countActions(c, "create") != 0 {
				t.Fatal("short key replaced")
			}
			if len(v) > 0 {
				assertNoKeyInLog(t, buf.String()+err.Error(), v)
			}
		})
	}
	// Exactly 32 bytes plus the trailing newline an operator's echo adds: fine.
	c := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultSecretName, Namespace: ns},
		Data:       map[string][]byte{DefaultKeyName: []byte("0123456789abcdef0123456789abcdef\n")},
	})
	if out, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, Options{Namespace: ns}); err != nil || out != Exists {
		t.Fatalf("%q, %v", out, err)
	}
}

func TestExistingWithoutKeyFails(t *testing.T) {
	c := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultSecretName, Namespace: ns},
		Data:       map[string][]byte{"wrong": []byte("0123456789abcdef0123456789abcdef")},
	})
	_, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, Options{Namespace: ns})
	if KindOf(err) != Invalid || !strings.Contains(err.Error(), `no data key "key"`) {
		t.Fatalf("err = %v (kind %q); want invalid naming the data key", err, KindOf(err))
	}
	if countActions(c, "create") != 0 {
		t.Fatal("created over an existing Secret")
	}
}

// The 409 race: another writer creates the Secret between our get and create.
func TestAlreadyExistsRaceIsSuccess(t *testing.T) {
	winner := []byte("the-other-writer's-key-32-bytes!")
	c := fake.NewClientset()
	c.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		other := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: DefaultSecretName, Namespace: ns},
			Data:       map[string][]byte{DefaultKeyName: winner},
		}
		if err := c.Tracker().Add(other); err != nil {
			t.Errorf("tracker add: %v", err)
		}
		return true, nil, apierrors.NewAlreadyExists(secretsGR, DefaultSecretName)
	})
	var buf bytes.Buffer
	out, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, testOpts(&buf))
	if err != nil || out != CreatedByOther {
		t.Fatalf("EnsureSecret = %q, %v; want created-by-other", out, err)
	}
	if got := getSecret(t, c, DefaultSecretName).Data[DefaultKeyName]; !bytes.Equal(got, winner) {
		t.Fatal("the race winner's key was not kept")
	}
	if countActions(c, "create") != 1 {
		t.Fatal("want exactly one create attempt (409 is final)")
	}
}

func TestForbiddenOnGet(t *testing.T) {
	c := fake.NewClientset()
	c.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(secretsGR, DefaultSecretName,
			errors.New(`User "system:serviceaccount:proxy-system:k8s-ws-proxy-bootstrap" cannot get resource "secrets"`))
	})
	_, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, testOpts(new(bytes.Buffer)))
	if KindOf(err) != Forbidden {
		t.Fatalf("err = %v; want forbidden", err)
	}
	for _, want := range []string{`"get" on secrets named "k8s-ws-proxy-hmac"`, "proxy-system", "Role"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if n := countActions(c, "get"); n != 1 {
		t.Fatalf("%d gets; a 403 must not be retried", n)
	}
	if countActions(c, "create") != 0 {
		t.Fatal("create attempted after a forbidden get")
	}
}

func TestForbiddenOnCreate(t *testing.T) {
	c := fake.NewClientset()
	c.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(secretsGR, "", errors.New("no create"))
	})
	_, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, testOpts(new(bytes.Buffer)))
	if KindOf(err) != Forbidden {
		t.Fatalf("err = %v; want forbidden", err)
	}
	if !strings.Contains(err.Error(), `"create" on secrets (a rule without resourceNames)`) {
		t.Fatalf("message does not name the missing rule: %v", err)
	}
}

func TestUnauthorized(t *testing.T) {
	c := fake.NewClientset()
	c.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewUnauthorized("token expired")
	})
	_, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, testOpts(new(bytes.Buffer)))
	if KindOf(err) != Unauthorized || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("err = %v; want unauthorized", err)
	}
}

func TestTransientErrorsAreRetried(t *testing.T) {
	c := fake.NewClientset()
	var calls atomic.Int32
	c.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if calls.Add(1) <= 2 {
			return true, nil, apierrors.NewServiceUnavailable("etcd leader election")
		}
		return false, nil, nil // fall through to the tracker: NotFound
	})
	out, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, testOpts(new(bytes.Buffer)))
	if err != nil || out != Created {
		t.Fatalf("%q, %v", out, err)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d get calls, want 3", calls.Load())
	}
}

func TestUnreachableViaReactor(t *testing.T) {
	c := fake.NewClientset()
	c.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	})
	o := testOpts(new(bytes.Buffer))
	o.APIServer = "https://user:pw@10.96.0.1:443"
	_, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, o)
	if KindOf(err) != Unreachable {
		t.Fatalf("err = %v; want unreachable", err)
	}
	if n := countActions(c, "get"); n != o.Attempts {
		t.Fatalf("%d attempts, want %d", n, o.Attempts)
	}
	if strings.Contains(err.Error(), "pw") {
		t.Fatalf("message leaks URL credentials: %v", err)
	}
	if !strings.Contains(err.Error(), "cannot reach the Kubernetes API server at https://user:xxxxx@10.96.0.1:443") &&
		!strings.Contains(err.Error(), "cannot reach the Kubernetes API server at https://10.96.0.1:443") {
		t.Fatalf("message does not name the server: %v", err)
	}
}

// A real client against a loopback port nobody listens on: the transport
// error path of client-go itself, bounded by the attempt budget.
func TestUnreachableRealClient(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := &rest.Config{Host: "http://" + addr, Timeout: 2 * time.Second}
	c, err := kubeclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	o := testOpts(new(bytes.Buffer))
	o.Attempts = 2
	o.APIServer = cfg.Host
	start := time.Now()
	_, err = EnsureSecret(context.Background(), c, o)
	if KindOf(err) != Unreachable || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v; want unreachable naming %s", err, addr)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("took %v; the retry budget must bound it", d)
	}
}

func TestContextCancelStopsRetries(t *testing.T) {
	c := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	c.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		cancel()
		return true, nil, apierrors.NewServiceUnavailable("down")
	})
	o := testOpts(new(bytes.Buffer))
	o.Attempts = 100
	o.Backoff = time.Hour // only the cancelled context can end the wait
	_, err := EnsureSecret(ctx, typed{c.CoreV1()}, o)
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v; want context.Canceled inside", err)
	}
	if n := countActions(c, "get"); n != 1 {
		t.Fatalf("%d gets after cancel", n)
	}
}

// seqReader serves the given chunks in order, then fails.
type seqReader struct{ chunks [][]byte }

func (r *seqReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, errors.New("no more chunks")
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// A raw key ending in ASCII whitespace would be trimmed by the proxy's
// keyring (and differ from what a control plane reads): it is redrawn.
func TestKeyTheKeyringWouldTrimIsRedrawn(t *testing.T) {
	trimmed := append(bytes.Repeat([]byte{0xA5}, KeyBytes-1), '\n')
	spaced := append(bytes.Repeat([]byte{0x5A}, KeyBytes-1), ' ')
	good := append(bytes.Repeat([]byte{0x3C}, KeyBytes-1), 0x80)
	c := fake.NewClientset()
	o := testOpts(new(bytes.Buffer))
	o.Rand = &seqReader{chunks: [][]byte{trimmed, spaced, good}}
	if out, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, o); err != nil || out != Created {
		t.Fatalf("%q, %v", out, err)
	}
	got := getSecret(t, c, DefaultSecretName).Data[DefaultKeyName]
	if !bytes.Equal(got, good) {
		t.Fatalf("stored key %x, want the third draw %x", got, good)
	}
	parsed, err := hmac.ParseKey(got)
	if err != nil || !bytes.Equal(parsed, got) {
		t.Fatalf("the keyring would load %x (%v), not the stored key", parsed, err)
	}

	// A source that never yields a usable key is refused, not looped on.
	o.Rand = bytes.NewReader(bytes.Repeat(trimmed, 64))
	if _, err := EnsureSecret(context.Background(), typed{fake.NewClientset().CoreV1()}, o); KindOf(err) != Failed {
		t.Fatalf("err = %v; want failed", err)
	}
}

// Every generated key loads unchanged in the proxy's keyring rules.
func TestGeneratedKeysLoadUnchanged(t *testing.T) {
	for range 200 {
		k, err := newKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := hmac.ParseKey(k); err != nil || !bytes.Equal(p, k) {
			t.Fatalf("key %x parses to %x, %v", k, p, err)
		}
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy exhausted") }

func TestRandFailureCreatesNothing(t *testing.T) {
	c := fake.NewClientset()
	o := testOpts(new(bytes.Buffer))
	o.Rand = failingReader{}
	_, err := EnsureSecret(context.Background(), typed{c.CoreV1()}, o)
	if err == nil || !strings.Contains(err.Error(), "entropy exhausted") {
		t.Fatalf("err = %v", err)
	}
	if countActions(c, "create") != 0 {
		t.Fatal("created a Secret without a key")
	}
}

func TestNamespaceRequired(t *testing.T) {
	_, err := EnsureSecret(context.Background(), typed{fake.NewClientset().CoreV1()}, Options{})
	if KindOf(err) != Invalid || !strings.Contains(err.Error(), "POD_NAMESPACE") {
		t.Fatalf("err = %v", err)
	}
}
