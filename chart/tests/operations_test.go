package tests

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// The key volume mounts the whole Secret: a rotation adds data keys beside
// the old ones, and an items list would hide every key but one.
func TestKeyVolumeMountsEveryKey(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		var ds appsv1.DaemonSet
		h.mustRender(t, "proxy", ns, minimalArgs...).get(t, "DaemonSet", "k8s-ws-proxy").decode(t, &ds)
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.Name == "hmac-key" {
				if v.Secret == nil || len(v.Secret.Items) != 0 {
					t.Errorf("hmac-key volume %+v: want the whole Secret, no items", v.VolumeSource)
				}
				return
			}
		}
		t.Error("no hmac-key volume")
	})
}

// hmacSecret.rotation runs the hook with --rotate and the proxies' token
// limits, and grants update on exactly the one Secret; off, neither.
func TestRotationHook(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		for _, on := range []bool{false, true} {
			args := slices.Clone(minimalArgs)
			if on {
				args = append(args, "--set", "hmacSecret.rotation.enabled=true", "--set", "hmacSecret.rotation.propagationDelay=90s",
					"--set", "proxy.maxTTL=3m", "--set", "proxy.leeway=10s")
			}
			ms := h.mustRender(t, "proxy", ns, args...)
			var job batchv1.Job
			ms.get(t, "Job", "k8s-ws-proxy-bootstrap").decode(t, &job)
			got := job.Spec.Template.Spec.Containers[0].Args
			rotating := slices.Contains(got, "--rotate")
			if rotating != on {
				t.Errorf("rotation=%v: hook args %q", on, got)
			}
			if on {
				for _, want := range []string{"--max-ttl=3m", "--leeway=10s", "--propagation-delay=90s"} {
					if !slices.Contains(got, want) {
						t.Errorf("hook args %q lack %s", got, want)
					}
				}
			}
			var role rbacv1.Role
			ms.get(t, "Role", "k8s-ws-proxy-bootstrap").decode(t, &role)
			verbs := []string{"get"}
			if on {
				verbs = []string{"get", "update"}
			}
			want := []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
				{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"k8s-ws-proxy-hmac"}, Verbs: verbs},
			}
			if !reflect.DeepEqual(role.Rules, want) {
				t.Errorf("rotation=%v: hook Role rules\n got %+v\nwant %+v", on, role.Rules, want)
			}
		}
	})
}

// kube-system is denied by default; the lists reach the proxy as flags and
// an empty deny list renders no flag (the proxy then denies nothing).
func TestNamespacePolicyFlags(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		for _, tc := range []struct {
			set  []string
			want []string
			not  []string
		}{
			{nil, []string{"--denied-namespaces=kube-system"}, []string{"--allowed-namespaces"}},
			{[]string{"proxy.allowedNamespaces={team-*,apps}", "proxy.deniedNamespaces={kube-*,team-secret}"},
				[]string{"--allowed-namespaces=team-*,apps", "--denied-namespaces=kube-*,team-secret"}, nil},
			{[]string{"proxy.deniedNamespaces=null"}, nil, []string{"--denied-namespaces", "--allowed-namespaces"}},
		} {
			args := slices.Clone(minimalArgs)
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			var ds appsv1.DaemonSet
			h.mustRender(t, "proxy", ns, args...).get(t, "DaemonSet", "k8s-ws-proxy").decode(t, &ds)
			got := ds.Spec.Template.Spec.Containers[0].Args
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("--set %v: args %q lack %s", tc.set, got, w)
				}
			}
			for _, n := range tc.not {
				for _, a := range got {
					if strings.HasPrefix(a, n) {
						t.Errorf("--set %v: unexpected %s", tc.set, a)
					}
				}
			}
		}
	})
}

// rbac.namespaces replaces the cluster-wide grant by a Role and RoleBinding
// per namespace, with the ClusterRole's rules.
func TestRBACNamespaces(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		ms := h.mustRender(t, "proxy", ns, append(slices.Clone(minimalArgs), "--set", "rbac.namespaces={team-a,team-b}", "--set", "rbac.allowAttach=true")...)
		for _, m := range ms {
			if m.Kind == "ClusterRole" || m.Kind == "ClusterRoleBinding" {
				t.Errorf("rbac.namespaces rendered %s", m.id())
			}
		}
		wantRules := []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create", "get"}},
			{APIGroups: []string{""}, Resources: []string{"pods/attach"}, Verbs: []string{"create", "get"}},
		}
		var roles, bindings []string
		for _, m := range ms {
			switch m.Kind {
			case "Role":
				var r rbacv1.Role
				m.decode(t, &r)
				if r.Name != "k8s-ws-proxy" {
					continue // the hook's
				}
				roles = append(roles, r.Namespace)
				if !reflect.DeepEqual(r.Rules, wantRules) {
					t.Errorf("Role %s/%s rules %+v", r.Namespace, r.Name, r.Rules)
				}
			case "RoleBinding":
				var b rbacv1.RoleBinding
				m.decode(t, &b)
				if b.Name != "k8s-ws-proxy" {
					continue
				}
				bindings = append(bindings, b.Namespace)
				if b.RoleRef.Kind != "Role" || b.RoleRef.Name != "k8s-ws-proxy" || len(b.Subjects) != 1 ||
					b.Subjects[0].Name != "k8s-ws-proxy" || b.Subjects[0].Namespace != ns {
					t.Errorf("RoleBinding %s: %+v %+v", b.Namespace, b.RoleRef, b.Subjects)
				}
			}
		}
		if want := []string{"team-a", "team-b"}; !slices.Equal(roles, want) || !slices.Equal(bindings, want) {
			t.Errorf("Roles in %v, RoleBindings in %v, want %v", roles, bindings, want)
		}
	})
}
