package cluster

import (
	"bytes"
	"context"
	"errors"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// hookObjects returns the chart's bootstrap hook ServiceAccount, Role,
// RoleBinding and Job from a render.
func hookObjects(t testing.TB, objs []*unstructured.Unstructured) (sa, role, binding, job *unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if o.GetAnnotations()["helm.sh/hook"] == "" {
			continue
		}
		switch o.GetKind() {
		case "ServiceAccount":
			sa = o.DeepCopy()
		case "Role":
			role = o.DeepCopy()
		case "RoleBinding":
			binding = o.DeepCopy()
		case "Job":
			job = o.DeepCopy()
		}
	}
	if sa == nil || role == nil || binding == nil || job == nil {
		t.Fatalf("render lacks a hook object: sa=%v role=%v binding=%v job=%v", sa != nil, role != nil, binding != nil, job != nil)
	}
	return sa, role, binding, job
}

// hookCommand is the hook Job's container args and the Secret it names.
func hookCommand(t testing.TB, job *unstructured.Unstructured) (args []string, secretName, keyName string) {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(job.Object, "spec", "template", "spec", "containers")
	if len(cs) != 1 {
		t.Fatalf("hook Job has %d containers, want 1", len(cs))
	}
	for _, a := range cs[0].(map[string]any)["args"].([]any) {
		s := a.(string)
		args = append(args, s)
		if v, ok := strings.CutPrefix(s, "--secret-name="); ok {
			secretName = v
		}
		if v, ok := strings.CutPrefix(s, "--key-name="); ok {
			keyName = v
		}
	}
	if len(args) == 0 || args[0] != "bootstrap-secret" || secretName == "" || keyName == "" {
		t.Fatalf("hook Job args %q: want bootstrap-secret with --secret-name and --key-name", args)
	}
	return args, secretName, keyName
}

// hook is the chart's bootstrap hook with its RBAC applied in its namespace.
type hook struct {
	sa                  string // the ServiceAccount's name
	role                *unstructured.Unstructured
	applier             *applier
	args                []string // the Job's container args
	secretName, keyName string
}

// applyHook renders the chart into the new namespace ns (Helm v3, extra
// flags), applies the hook's ServiceAccount, Role and RoleBinding and reads
// the hook Job's command.
func applyHook(t testing.TB, ns string, extra ...string) hook {
	t.Helper()
	ensureNamespace(t, ns)
	sa, role, binding, job := hookObjects(t, renderChart(t, tools.HelmV3Version, ns, extra...))
	h := hook{sa: sa.GetName(), role: role, applier: newApplier(t)}
	h.args, h.secretName, h.keyName = hookCommand(t, job)
	h.applier.mustApply(t, sa, role, binding)
	return h
}

// bootstrapRun is one run of `k8s-ws-proxy bootstrap-secret` as the hook's
// pod would run it: the Job's own args, POD_NAMESPACE from the downward API,
// and the hook ServiceAccount's credentials (here a kubeconfig holding a
// TokenRequest token, in a pod the mounted token).
type bootstrapRun struct {
	exitCode       int
	stdout, stderr string
}

func runBootstrap(t *testing.T, namespace, kubeconfig string, args []string) bootstrapRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, proxyBin, append(append([]string(nil), args...), "--kubeconfig", kubeconfig)...)
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+namespace)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := bootstrapRun{stdout: stdout.String(), stderr: stderr.String()}
	var ee *osexec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.exitCode = ee.ExitCode()
	default:
		t.Fatalf("running bootstrap-secret: %v", err)
	}
	return r
}

// serviceAccountKubeconfig writes a kubeconfig for namespace/name with a
// fresh token from the TokenRequest API.
func serviceAccountKubeconfig(t testing.TB, namespace, name string) string {
	t.Helper()
	cfg, err := api.ServiceAccountConfig(context.Background(), namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := api.WriteKubeconfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitAuthorized waits until RBAC's caches answer allowed for the
// ServiceAccount: role and binding changes reach the authorizer through
// informers, a moment after the write.
func waitAuthorized(t testing.TB, namespace, sa string, ra authorizationv1.ResourceAttributes, allowed bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := pollUntil(ctx, func() error {
		got, reason, err := canI(ctx, namespace, sa, ra)
		if err != nil {
			return err
		}
		if got != allowed {
			return errors.New("allowed=" + boolString(got) + " " + reason)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s/%s %s %s/%s in %q: never allowed=%v: %v", namespace, sa, ra.Verb, ra.Resource, ra.Subresource, ra.Namespace, allowed, err)
	}
}

// canI asks the API server's authorizer, like `kubectl auth can-i --as`,
// what a ServiceAccount may do. The groups are the ones the token
// authenticator gives every ServiceAccount.
func canI(ctx context.Context, namespace, sa string, ra authorizationv1.ResourceAttributes) (bool, string, error) {
	sar, err := api.AdminClient().AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:" + namespace + ":" + sa,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
			ResourceAttributes: &ra,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	return sar.Status.Allowed, sar.Status.Reason, nil
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestBootstrapWithHookRole is issue 4's test 2: the bootstrap command,
// authenticated as the hook's ServiceAccount with exactly the chart's hook
// Role, creates the Secret; a second run leaves it byte-identical; without
// the Role it fails with a clear 403 message; the key it made loads in the
// proxy's keyring.
func TestBootstrapWithHookRole(t *testing.T) {
	const ns = "bootstrap-e2e"
	h := applyHook(t, ns)
	args, secretName, keyName := h.args, h.secretName, h.keyName
	secrets := api.AdminClient().CoreV1().Secrets(ns)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	waitAuthorized(t, ns, h.sa, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "secrets"}, true)
	kubeconfig := serviceAccountKubeconfig(t, ns, h.sa)

	first := runBootstrap(t, ns, kubeconfig, args)
	if first.exitCode != 0 {
		t.Fatalf("first bootstrap run exited %d:\n%s", first.exitCode, first.stderr)
	}
	created, err := secrets.Get(ctx, secretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("no Secret after the first run: %v", err)
	}
	key := created.Data[keyName]
	if len(key) != 32 {
		t.Fatalf("Secret data %q holds %d bytes, want 32", keyName, len(key))
	}
	if strings.Contains(first.stderr+first.stdout, string(key)) {
		t.Error("the bootstrap printed the key")
	}

	second := runBootstrap(t, ns, kubeconfig, args)
	if second.exitCode != 0 {
		t.Fatalf("second bootstrap run exited %d:\n%s", second.exitCode, second.stderr)
	}
	if !strings.Contains(second.stderr, `"exists"`) {
		t.Errorf("second run did not report the existing Secret:\n%s", second.stderr)
	}
	again, err := secrets.Get(ctx, secretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.ResourceVersion != created.ResourceVersion || !bytes.Equal(again.Data[keyName], key) || len(again.Data) != len(created.Data) {
		t.Errorf("second run changed the Secret (resourceVersion %s -> %s)", created.ResourceVersion, again.ResourceVersion)
	}

	// The key, mounted as the kubelet mounts a Secret, loads in the proxy's
	// keyring unchanged: the token signer of a control plane that reads the
	// same Secret must derive the same key and key id.
	keyDir := filepath.Join(t.TempDir(), "keys")
	filewatchtest.WriteSecretDir(t, keyDir, map[string][]byte{keyName: key})
	kr, err := hmac.NewKeyring(hmac.KeyringOptions{Dir: keyDir})
	if err != nil {
		t.Fatal(err)
	}
	if !kr.Ready() || kr.KeyCount() != 1 {
		t.Fatalf("keyring over the bootstrapped Secret: ready=%v keys=%d", kr.Ready(), kr.KeyCount())
	}
	loaded, ok := kr.Lookup(hmac.KeyID(key), time.Now())
	if !ok || !bytes.Equal(loaded, key) {
		t.Errorf("keyring does not hold the Secret's key byte for byte under its key id (found=%v)", ok)
	}

	// Without the Role: a 403, explained.
	if err := h.applier.delete(ctx, h.role); err != nil {
		t.Fatal(err)
	}
	if err := secrets.Delete(ctx, secretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAuthorized(t, ns, h.sa, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "secrets", Name: secretName}, false)
	denied := runBootstrap(t, ns, kubeconfig, args)
	if denied.exitCode == 0 {
		t.Fatalf("bootstrap without its Role succeeded:\n%s", denied.stderr)
	}
	for _, want := range []string{"forbidden", `\"get\" on secrets named \"` + secretName + `\"`, "Role"} {
		if !strings.Contains(denied.stderr, want) {
			t.Errorf("403 message lacks %q:\n%s", want, denied.stderr)
		}
	}
	if _, err := secrets.Get(ctx, secretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Secret after the denied run: %v, want NotFound", err)
	}
}
