package kubeapi

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// TestSmoke proves the harness gives a real, authorizing API server: the
// pinned version answers, the admin can write, a ServiceAccount token from
// the TokenRequest API authenticates, RBAC denies that account until a Role
// grants it, and a written kubeconfig works for a separate program.
func TestSmoke(t *testing.T) {
	s := New(t, Options{})
	t.Logf("etcd ready in %s, kube-apiserver ready in %s", s.EtcdStartup.Round(time.Millisecond), s.APIServerStartup.Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	admin := s.AdminClient()

	v, err := admin.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if want := "v" + tools.KubernetesVersion; v.GitVersion != want {
		t.Errorf("server version %q, want %q", v.GitVersion, want)
	}

	const ns = "smoke"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	saCfg, err := s.ServiceAccountConfig(ctx, ns, "nobody")
	if err != nil {
		t.Fatal(err)
	}
	sa := kubernetes.NewForConfigOrDie(saCfg)

	// Authenticated as the ServiceAccount: a denial below is RBAC's, not a
	// failed login.
	review, err := sa.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := review.Status.UserInfo.Username, "system:serviceaccount:smoke:nobody"; got != want {
		t.Errorf("token authenticates as %q, want %q", got, want)
	}

	_, err = sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("unprivileged ServiceAccount listing pods: %v, want Forbidden", err)
	}

	if _, err := admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "pod-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "nobody"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// RBAC decisions come from informer caches: poll until the binding is seen.
	if err := retry(ctx, func() error {
		_, err := sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err
	}); err != nil {
		t.Fatalf("ServiceAccount with a pod-reader Role still cannot list pods: %v", err)
	}
	// The grant is exactly list pods in this namespace.
	if _, err := sa.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing pods in another namespace: %v, want Forbidden", err)
	}
	if _, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets: %v, want Forbidden", err)
	}

	// A client-certificate user outside system:masters is subject to RBAC too.
	userCfg, err := s.UserConfig("alice", "developers")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubernetes.NewForConfigOrDie(userCfg).CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("certificate user listing namespaces: %v, want Forbidden", err)
	}

	// No credentials at all: anonymous, and denied.
	anon := kubernetes.NewForConfigOrDie(&rest.Config{Host: s.URL, TLSClientConfig: rest.TLSClientConfig{CAData: s.CA.CertPEM}})
	if _, err := anon.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) && !apierrors.IsUnauthorized(err) {
		t.Errorf("anonymous listing namespaces: %v, want Forbidden or Unauthorized", err)
	}

	// A kubeconfig written for another program round-trips.
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := s.WriteKubeconfig(path, saCfg); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("kubeconfig %s: %v, mode %v; want private to the owner", path, err, fi.Mode())
	}
	fromFile, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kubernetes.NewForConfigOrDie(fromFile).CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("kubeconfig client listing pods: %v", err)
	}
}

// TestStopTearsDown checks that Stop ends both processes and removes the
// directory, so runs leave no servers or data behind on a shared machine.
func TestStopTearsDown(t *testing.T) {
	s, err := Start(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	procs := []*process{s.apiserver, s.etcd}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if !p.exited() {
			t.Errorf("%s still running after Stop", p.name)
		}
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Stop: %v", s.Dir, err)
	}
}

// retry retries fn until it succeeds or ctx ends, for state that the API
// server applies asynchronously (RBAC caches).
func retry(ctx context.Context, fn func() error) error {
	return poll.Until(ctx, 100*time.Millisecond, time.Hour, func(context.Context) error { return fn() })
}
