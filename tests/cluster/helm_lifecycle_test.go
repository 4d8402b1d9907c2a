package cluster

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

const (
	hookName   = "k8s-ws-proxy-bootstrap"
	hmacSecret = "k8s-ws-proxy-hmac"
)

var lifecycleValues = []string{"--set", "enabled=true", "--set", "image.tag=v0.1.0"}

// TestHelmLifecycleOnControlPlane is helm install, upgrade, rollback and
// uninstall of the chart, hooks included, on a control plane that runs them:
// the hook ServiceAccount, Role and RoleBinding exist before the Job (its pod
// is admitted, and its bootstrap-secret, run as that ServiceAccount, creates
// the Secret), the DaemonSet gets a ready pod on every node, an upgrade to a
// new chart version runs the hook again, leaves the Secret and the
// DaemonSet's pod template (no proxy restarts) as they were, and uninstall
// leaves exactly what docs/chart.md says.
func TestHelmLifecycleOnControlPlane(t *testing.T) {
	for _, version := range tools.HelmVersions {
		t.Run("helm-"+version, func(t *testing.T) {
			s := controlPlane(t)
			h := newHelmCLI(t, version)
			ns := "lifecycle-" + strings.ReplaceAll(strings.TrimPrefix(version, "v"), ".", "-")
			cs := s.AdminClient()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
			defer cancel()
			chart := chartCopy(t, func(_ string, b []byte) []byte { return b })
			// Whatever fails below, the next version's install must not meet
			// this release's cluster-scoped objects.
			t.Cleanup(func() { _, _ = h.run(t, 2*time.Minute, "uninstall", releaseName, "-n", ns, "--wait") })

			// install
			begin := time.Now()
			h.mustRun(t, 5*time.Minute, append([]string{"install", releaseName, chart, "-n", ns, "--create-namespace", "--wait", "--timeout", "4m"}, lifecycleValues...)...)
			t.Logf("helm %s install: %s", version, time.Since(begin).Round(time.Millisecond))
			runs := runsIn(ns)
			if len(runs) != 1 || runs[0].exitCode != 0 || !strings.Contains(runs[0].output, `"msg":"created"`) {
				t.Fatalf("hook runs after install: %+v; want one bootstrap-secret that created the Secret", runs)
			}
			for _, o := range []struct {
				kind string
				get  func() error
			}{
				{"ServiceAccount", func() error {
					_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, hookName, metav1.GetOptions{})
					return err
				}},
				{"Role", func() error { _, err := cs.RbacV1().Roles(ns).Get(ctx, hookName, metav1.GetOptions{}); return err }},
				{"RoleBinding", func() error {
					_, err := cs.RbacV1().RoleBindings(ns).Get(ctx, hookName, metav1.GetOptions{})
					return err
				}},
			} {
				if err := o.get(); err != nil {
					t.Errorf("hook %s: %v", o.kind, err)
				}
			}
			job1, err := cs.BatchV1().Jobs(ns).Get(ctx, hookName, metav1.GetOptions{})
			if err != nil || job1.Status.Succeeded != 1 {
				t.Fatalf("hook Job after install: %v %+v", err, job1.Status)
			}
			secret, err := cs.CoreV1().Secrets(ns).Get(ctx, hmacSecret, metav1.GetOptions{})
			if err != nil || len(secret.Data["key"]) != 32 {
				t.Fatalf("HMAC Secret after install: %v (data keys %d)", err, len(secret.Data))
			}
			ds := waitDaemonSetOnEveryNode(t, ctx, cs, ns)
			podsBefore := daemonSetPods(t, ctx, cs, ns)

			// upgrade to a new chart version, same values
			bumped := chartCopy(t, func(rel string, b []byte) []byte {
				if rel == "Chart.yaml" {
					return bytes.Replace(b, []byte("\nversion: 0.1.0\n"), []byte("\nversion: 0.1.1\n"), 1)
				}
				return b
			})
			h.mustRun(t, 5*time.Minute, append([]string{"upgrade", releaseName, bumped, "-n", ns, "--wait", "--timeout", "4m"}, lifecycleValues...)...)
			runs = runsIn(ns)
			if len(runs) != 2 || runs[1].exitCode != 0 || !strings.Contains(runs[1].output, "left untouched") {
				t.Errorf("hook runs after upgrade: %+v; want a second run that left the Secret alone", runs)
			}
			job2, err := cs.BatchV1().Jobs(ns).Get(ctx, hookName, metav1.GetOptions{})
			if err != nil || job2.UID == job1.UID || job2.Status.Succeeded != 1 {
				t.Errorf("hook Job after upgrade: %v (uid %s, was %s) %+v; want a new, succeeded Job", err, job2.UID, job1.UID, job2.Status)
			}
			secret2, err := cs.CoreV1().Secrets(ns).Get(ctx, hmacSecret, metav1.GetOptions{})
			if err != nil || secret2.ResourceVersion != secret.ResourceVersion || !bytes.Equal(secret2.Data["key"], secret.Data["key"]) {
				t.Errorf("the upgrade changed the HMAC Secret (resourceVersion %s -> %s, err %v)", secret.ResourceVersion, secret2.ResourceVersion, err)
			}
			ds2, err := cs.AppsV1().DaemonSets(ns).Get(ctx, "k8s-ws-proxy", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ds2.Generation != ds.Generation || podTemplateHash(t, ctx, cs, ns) != podTemplateHash(t, ctx, cs, ns, podsBefore...) {
				t.Errorf("a chart-only upgrade changed the DaemonSet's pod template: generation %d -> %d; template labels before %v, after %v",
					ds.Generation, ds2.Generation, ds.Spec.Template.Labels, ds2.Spec.Template.Labels)
			}
			if after := daemonSetPods(t, ctx, cs, ns); !sameUIDs(after, podsBefore) {
				t.Errorf("the chart-only upgrade replaced proxy pods: %v -> %v", uids(podsBefore), uids(after))
			}

			// rollback to the first revision
			h.mustRun(t, 5*time.Minute, "rollback", releaseName, "1", "-n", ns, "--wait", "--timeout", "4m")
			if st := h.status(t, releaseName, ns); st.Version != 3 || st.Info.Status != "deployed" {
				t.Errorf("after rollback: revision %d %s, want 3 deployed", st.Version, st.Info.Status)
			}
			if n := len(runsIn(ns)); n != 2 {
				t.Errorf("rollback ran the hook (%d runs); the chart declares it for install and upgrade only", n)
			}
			waitDaemonSetOnEveryNode(t, ctx, cs, ns)

			// uninstall: the release's objects go, what hooks made stays.
			h.mustRun(t, 5*time.Minute, "uninstall", releaseName, "-n", ns, "--wait", "--timeout", "4m")
			gone := map[string]func() error{
				"DaemonSet": func() error {
					_, err := cs.AppsV1().DaemonSets(ns).Get(ctx, "k8s-ws-proxy", metav1.GetOptions{})
					return err
				},
				"Service": func() error {
					_, err := cs.CoreV1().Services(ns).Get(ctx, "k8s-ws-proxy", metav1.GetOptions{})
					return err
				},
				"ServiceAccount": func() error {
					_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "k8s-ws-proxy", metav1.GetOptions{})
					return err
				},
				"ClusterRole": func() error {
					_, err := cs.RbacV1().ClusterRoles().Get(ctx, "k8s-ws-proxy", metav1.GetOptions{})
					return err
				},
				"ClusterRoleBinding": func() error {
					_, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "k8s-ws-proxy", metav1.GetOptions{})
					return err
				},
			}
			for kind, get := range gone {
				if err := get(); !apierrors.IsNotFound(err) {
					t.Errorf("%s k8s-ws-proxy after uninstall: %v, want not found", kind, err)
				}
			}
			stays := map[string]func() error{
				"Secret " + hmacSecret: func() error { _, err := cs.CoreV1().Secrets(ns).Get(ctx, hmacSecret, metav1.GetOptions{}); return err },
				"ServiceAccount " + hookName: func() error {
					_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, hookName, metav1.GetOptions{})
					return err
				},
				"Role " + hookName: func() error { _, err := cs.RbacV1().Roles(ns).Get(ctx, hookName, metav1.GetOptions{}); return err },
				"RoleBinding " + hookName: func() error {
					_, err := cs.RbacV1().RoleBindings(ns).Get(ctx, hookName, metav1.GetOptions{})
					return err
				},
				"Job " + hookName: func() error { _, err := cs.BatchV1().Jobs(ns).Get(ctx, hookName, metav1.GetOptions{}); return err },
			}
			for what, get := range stays {
				if err := get(); err != nil {
					t.Errorf("%s after uninstall: %v; docs/chart.md says it stays", what, err)
				}
			}
			// The garbage collector and KWOK take the proxy pods away.
			if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
				pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=proxy"})
				return err == nil && len(pods.Items) == 0, nil
			}); err != nil {
				t.Errorf("proxy pods still there after uninstall: %v", err)
			}
		})
	}
}

// TestHelmInstallCatchesSeedHookWeights is the negative control: the seed's
// weights (Job -10, its ServiceAccount, Role and RoleBinding 0) make Helm
// create the Job first, the ServiceAccount admission plugin refuses its pod,
// and the install fails. It proves the harness catches that regression.
func TestHelmInstallCatchesSeedHookWeights(t *testing.T) {
	s := controlPlane(t)
	h := newHelmCLI(t, tools.HelmV3Version)
	const ns = "seed-weights"
	cs := s.AdminClient()
	seed := chartCopy(t, func(rel string, b []byte) []byte {
		if rel != "templates/bootstrap-hook.yaml" {
			return b
		}
		b = bytes.ReplaceAll(b, []byte(`helm.sh/hook-weight: "-20"`), []byte(`helm.sh/hook-weight: "0"`))
		return bytes.ReplaceAll(b, []byte(`helm.sh/hook-weight: "-15"`), []byte(`helm.sh/hook-weight: "0"`))
	})
	t.Cleanup(func() { _, _ = h.run(t, 2*time.Minute, "uninstall", releaseName, "-n", ns) })
	out, err := h.run(t, 3*time.Minute, append([]string{"install", releaseName, seed, "-n", ns, "--create-namespace", "--wait", "--timeout", "45s"}, lifecycleValues...)...)
	if err == nil {
		t.Fatalf("helm install with the seed's hook weights succeeded:\n%s", out)
	}
	t.Logf("helm install failed as it must: %v\n%s", err, strings.TrimSpace(out))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	events, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Job,involvedObject.name=" + hookName})
	if err != nil {
		t.Fatal(err)
	}
	var refused string
	for _, e := range events.Items {
		if e.Reason == "FailedCreate" && strings.Contains(e.Message, "error looking up service account "+ns+"/"+hookName) &&
			strings.Contains(e.Message, `serviceaccount "`+hookName+`" not found`) {
			refused = e.Message
		}
	}
	if refused == "" {
		var all []string
		for _, e := range events.Items {
			all = append(all, e.Reason+": "+e.Message)
		}
		t.Fatalf("no FailedCreate event for the missing ServiceAccount; the Job's events: %q", all)
	}
	t.Logf("the Job controller's event: %s", refused)
	if runs := runsIn(ns); len(runs) != 0 {
		t.Errorf("a hook pod ran without its ServiceAccount: %+v", runs)
	}
}

// waitDaemonSetOnEveryNode waits until the proxy DaemonSet has a ready pod
// on every fake node and its status has caught up with its generation.
func waitDaemonSetOnEveryNode(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns string) *appsv1.DaemonSet {
	t.Helper()
	var ds *appsv1.DaemonSet
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		ds, err = cs.AppsV1().DaemonSets(ns).Get(ctx, "k8s-ws-proxy", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		st := ds.Status
		return st.ObservedGeneration == ds.Generation && st.DesiredNumberScheduled == fakeNodes && st.NumberReady == fakeNodes && st.UpdatedNumberScheduled == fakeNodes, nil
	})
	if err != nil {
		t.Fatalf("DaemonSet not ready on all %d nodes: %v (status %+v)", fakeNodes, err, ds.Status)
	}
	nodes := map[string]bool{}
	for _, p := range daemonSetPods(t, ctx, cs, ns) {
		if p.Status.Phase == corev1.PodRunning {
			nodes[p.Spec.NodeName] = true
		}
	}
	for _, n := range cp.FakeNodes {
		if !nodes[n] {
			t.Errorf("no Running proxy pod on node %s (pods on %v)", n, nodes)
		}
	}
	return ds
}

func daemonSetPods(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns string) []corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=k8s-ws-proxy,app.kubernetes.io/component=proxy"})
	if err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

// podTemplateHash is the controller-revision-hash the DaemonSet controller
// gives its pods (of pods, or of the current pods when none are passed): it
// changes exactly when the pod template does.
func podTemplateHash(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns string, pods ...corev1.Pod) string {
	t.Helper()
	if pods == nil {
		pods = daemonSetPods(t, ctx, cs, ns)
	}
	hashes := map[string]bool{}
	for _, p := range pods {
		hashes[p.Labels[appsv1.ControllerRevisionHashLabelKey]] = true
	}
	if len(hashes) != 1 {
		t.Fatalf("proxy pods carry %d template hashes: %v", len(hashes), hashes)
	}
	for h := range hashes {
		return h
	}
	return ""
}

func uids(pods []corev1.Pod) []types.UID {
	var out []types.UID
	for _, p := range pods {
		out = append(out, p.UID)
	}
	return out
}

func sameUIDs(a, b []corev1.Pod) bool {
	return fmt.Sprint(sortedUIDs(a)) == fmt.Sprint(sortedUIDs(b))
}

func sortedUIDs(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, string(p.UID))
	}
	slices.Sort(out)
	return out
}
