package cluster

import (
	"context"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// TestChartAppliesToRealAPIServer is issue 4's test 1: the fully-on chart,
// hooks included, rendered by each pinned helm, is accepted by a real
// kube-apiserver with server-side apply and strict field validation, first
// as a dry run (nothing stored), then for real (everything stored).
func TestChartAppliesToRealAPIServer(t *testing.T) {
	installCRDs(t)
	for i, hv := range tools.HelmVersions {
		t.Run("helm-"+hv, func(t *testing.T) {
			// A namespace per helm version; the cluster-scoped objects are
			// shared and re-applied, as an upgrade would.
			ns := []string{"chart-apply-v3", "chart-apply-v4"}[i]
			ensureNamespace(t, ns)
			objs := renderChart(t, hv, ns)

			// The render must hold what this test claims to apply.
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.GetKind()]++
			}
			for _, k := range []string{"DaemonSet", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Job", "Service", "NetworkPolicy", "ServiceMonitor", "Certificate"} {
				if kinds[k] == 0 {
					t.Errorf("fully-on render has no %s (kinds: %v)", k, kinds)
				}
			}
			hooks := 0
			for _, o := range objs {
				if o.GetAnnotations()["helm.sh/hook"] != "" {
					hooks++
				}
			}
			if hooks < 4 {
				t.Errorf("render has %d hook objects, want the bootstrap ServiceAccount, Role, RoleBinding and Job", hooks)
			}

			a := newApplier(t)
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			// Applied as rendered, without kubectl's -n: a namespaced object
			// without metadata.namespace would land in whatever namespace
			// the applying tool defaults to.
			for _, o := range objs {
				if _, err := a.resource(o); err != nil {
					t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
				}
				if a.isNamespaced(o) && o.GetNamespace() != ns {
					t.Errorf("%s %s rendered with namespace %q, want %q", o.GetKind(), o.GetName(), o.GetNamespace(), ns)
				}
			}

			// Dry run: every object validated and admitted, none stored.
			for _, o := range objs {
				if _, err := a.apply(ctx, o, true); err != nil {
					t.Errorf("dry-run apply of %s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
			if t.Failed() {
				return
			}
			for _, o := range namespaced(objs) {
				ri, err := a.resource(o)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{}); err == nil {
					t.Errorf("%s %s/%s exists after a dry run", o.GetKind(), ns, o.GetName())
				}
			}

			// For real: every object stored, and read back as applied.
			for _, o := range objs {
				got, err := a.apply(ctx, o, false)
				if err != nil {
					t.Errorf("apply of %s %s: %v", o.GetKind(), o.GetName(), err)
					continue
				}
				if got.GetUID() == "" {
					t.Errorf("%s %s: stored object has no UID", o.GetKind(), o.GetName())
				}
				ri, _ := a.resource(o)
				back, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
				if err != nil {
					t.Errorf("reading back %s %s: %v", o.GetKind(), o.GetName(), err)
					continue
				}
				if !slices.ContainsFunc(back.GetManagedFields(), func(f metav1.ManagedFieldsEntry) bool { return f.Manager == fieldManager }) {
					t.Errorf("%s %s is not managed by %s after apply", o.GetKind(), o.GetName(), fieldManager)
				}
			}
			// Spot-check that the API server kept what the chart set,
			// rather than pruning it: the DaemonSet's image and the
			// ServiceMonitor's endpoint (a custom resource).
			ds := pick(t, objs, "DaemonSet", "k8s-ws-proxy")
			ri, _ := a.resource(ds)
			back, err := ri.Get(ctx, "k8s-ws-proxy", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantImage := containerImage(t, ds)
			if got := containerImage(t, back); got != wantImage {
				t.Errorf("stored DaemonSet image %q, rendered %q", got, wantImage)
			}
			sm := pick(t, objs, "ServiceMonitor", "k8s-ws-proxy")
			ri, _ = a.resource(sm)
			smBack, err := ri.Get(ctx, "k8s-ws-proxy", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			got, _, _ := unstructured.NestedSlice(smBack.Object, "spec", "endpoints")
			if len(want) == 0 || len(got) != len(want) {
				t.Errorf("ServiceMonitor endpoints stored %v, rendered %v", got, want)
			}
		})
	}
}

// TestChartApplyRejectsUnknownField proves the apply above can fail: the
// same path with a misspelt field in the DaemonSet and in a custom resource
// is refused by the API server.
func TestChartApplyRejectsUnknownField(t *testing.T) {
	installCRDs(t)
	ensureNamespace(t, "chart-apply-bad")
	objs := renderChart(t, tools.HelmV3Version, "chart-apply-bad")
	a := newApplier(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	ds := pick(t, objs, "DaemonSet", "k8s-ws-proxy")
	if err := unstructured.SetNestedField(ds.Object, int64(1), "spec", "replicas"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.apply(ctx, ds, true); err == nil {
		t.Error("a DaemonSet with spec.replicas was accepted")
	}
	cert := pick(t, objs, "Certificate", "k8s-ws-proxy")
	if err := unstructured.SetNestedField(cert.Object, "x", "spec", "dnsNamez"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.apply(ctx, cert, true); err == nil {
		t.Error("a Certificate with spec.dnsNamez was accepted")
	}
}

func namespaced(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetNamespace() != "" {
			out = append(out, o)
		}
	}
	return out
}

func containerImage(t *testing.T, ds *unstructured.Unstructured) string {
	t.Helper()
	cs, _, err := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
	if err != nil || len(cs) == 0 {
		t.Fatalf("DaemonSet without containers: %v", err)
	}
	img, _ := cs[0].(map[string]any)["image"].(string)
	return img
}
