package kubeclient

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeapi"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Every call the binary makes, against a real kube-apiserver: the results
// decode, and the API server's errors keep their status (NotFound,
// AlreadyExists, Conflict) for the callers' apierrors checks.
func TestAgainstAPIServer(t *testing.T) {
	s := kubeapi.New(t, kubeapi.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const ns = "default"
	if _, err := s.AdminClient().CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec:       corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "c", Image: "registry.example/c:1"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	core, err := New(s.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}

	pod, err := core.Pods(ns).Get(ctx, "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name != "p" || pod.Spec.NodeName != "node-a" || len(pod.Spec.Containers) != 1 || pod.UID == "" {
		t.Errorf("pod %+v", pod)
	}
	if _, err := core.Pods(ns).Get(ctx, "missing", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("missing pod: %v, want NotFound", err)
	}

	secrets := core.Secrets(ns)
	in := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "k"}, Data: map[string][]byte{"key": []byte("one")}}
	created, err := secrets.Create(ctx, in, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.Create(ctx, in, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Errorf("second create: %v, want AlreadyExists", err)
	}
	got, err := secrets.Get(ctx, "k", metav1.GetOptions{})
	if err != nil || string(got.Data["key"]) != "one" {
		t.Fatalf("get = %v, %v", got, err)
	}
	got.Data["key"] = []byte("two")
	updated, err := secrets.Update(ctx, got, metav1.UpdateOptions{})
	if err != nil || string(updated.Data["key"]) != "two" || updated.ResourceVersion == created.ResourceVersion {
		t.Fatalf("update = %v, %v", updated, err)
	}
	if _, err := secrets.Update(ctx, created, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("update from a stale resourceVersion: %v, want Conflict", err)
	}
	if _, err := secrets.Get(ctx, "missing", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("missing secret: %v, want NotFound", err)
	}

	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "pods", Subresource: "exec", Name: "p"},
	}}
	for _, c := range []struct {
		user   string
		groups []string
		want   bool
	}{
		{"admin", []string{"system:masters"}, true},
		{"nobody", nil, false},
	} {
		cfg, err := s.UserConfig(c.user, c.groups...)
		if err != nil {
			t.Fatal(err)
		}
		authz, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		r, err := authz.SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: %v", c.user, err)
		}
		if r.Status.Allowed != c.want {
			t.Errorf("%s may create pods/exec: %v, want %v (%+v)", c.user, r.Status.Allowed, c.want, r.Status)
		}
	}
}
