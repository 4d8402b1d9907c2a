package tests

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

const ns = "proxy-system"

// fullArgs renders every optional feature on, on a cluster with cert-manager
// and the Prometheus Operator.
var fullArgs = append([]string{"-f", testdata("values-full.yaml")}, optionalAPIs...)

var minimalArgs = []string{"--set", "enabled=true", "--set", "image.tag=v0.1.0"}

// Gate 1: off by default.
func TestDefaultValuesRenderNothing(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		for _, args := range [][]string{nil, optionalAPIs} {
			out, stderr, err := h.template(t, "proxy", ns, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			ms, err := parseManifests(out)
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 0 {
				t.Fatalf("default values rendered %d objects: %v", len(ms), ms.ids())
			}
		}
	})
}

// Gate 2 and the other render-time refusals: each names what to change.
func TestRefusals(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"empty tag", []string{"--set", "enabled=true"},
			"image.tag is empty: set image.tag"},
		{"registry without host", append(slices.Clone(minimalArgs), "--set", "image.registry=myorg"),
			`at '/image/registry': 'myorg' does not match pattern`},
		{"global registry without host", append(slices.Clone(minimalArgs), "--set", "global.imageRegistry=mirror/ghcr"),
			`at '/global/imageRegistry': 'mirror/ghcr' does not match pattern`},
		// The template refuses too, for tools that skip the schema.
		{"registry without host, schema skipped", append(slices.Clone(minimalArgs), "--skip-schema-validation", "--set", "global.imageRegistry=mirror/ghcr"),
			`registry "mirror/ghcr" does not start with a registry host`},
		{"empty registry, schema skipped", append(slices.Clone(minimalArgs), "--skip-schema-validation", "--set", "image.registry="),
			"image.registry is empty"},
		{"cert-manager API missing", []string{"-f", testdata("values-full.yaml"), "--api-versions", "monitoring.coreos.com/v1"},
			"the cert-manager.io/v1 API is not available"},
		{"Prometheus Operator API missing", []string{"-f", testdata("values-full.yaml"), "--api-versions", "cert-manager.io/v1"},
			"the monitoring.coreos.com/v1 API (Prometheus Operator) is not available"},
		{"tls without certificate", append(slices.Clone(minimalArgs), "--set", "tls.enabled=true"),
			"tls.enabled needs a certificate"},
		{"mTLS without CA", append(slices.Clone(minimalArgs), "--set", "tls.enabled=true", "--set", "tls.existingSecret=s", "--set", "tls.clientAuth.enabled=true"),
			"tls.clientAuth.enabled needs the client CA"},
		{"grace not above shutdown", append(slices.Clone(minimalArgs), "--set", "terminationGracePeriodSeconds=25"),
			"terminationGracePeriodSeconds (25) must be larger than proxy.shutdownGraceSeconds (25)"},
		{"network policy without guacd selector", append(slices.Clone(minimalArgs), "--set", "networkPolicy.enabled=true"),
			"networkPolicy.guacd.podSelector is empty"},
		// WebSocket exec needs create on pods/exec from 1.35; older clusters are refused.
		{"kubernetes too old", append(slices.Clone(minimalArgs), "--kube-version", "1.34.3"),
			"requires kubeVersion: >=1.35.0-0"},
		{"cert-manager without issuer", append(slices.Clone(minimalArgs), "--set", "tls.enabled=true", "--set", "tls.certManager.enabled=true", "--api-versions", "cert-manager.io/v1"),
			"tls.certManager.issuerRef.name is empty"},
	}
	forEachHelm(t, func(t *testing.T, h helm) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				out, stderr, err := h.template(t, "proxy", ns, c.args...)
				if err == nil {
					t.Fatalf("rendered instead of failing:\n%s", out)
				}
				if !strings.Contains(stderr, c.want) {
					t.Fatalf("error does not say %q:\n%s", c.want, stderr)
				}
			})
		}
	})
}

// Gate 3: the exact objects, fully on and minimally on.
func TestKindsAndNames(t *testing.T) {
	full := []string{
		"Certificate/k8s-ws-proxy",
		"Certificate/k8s-ws-proxy-guacd-client",
		"ClusterRole/k8s-ws-proxy",
		"ClusterRoleBinding/k8s-ws-proxy",
		"DaemonSet/k8s-ws-proxy",
		"Job/k8s-ws-proxy-bootstrap",
		"NetworkPolicy/k8s-ws-proxy",
		"Role/k8s-ws-proxy-bootstrap",
		"RoleBinding/k8s-ws-proxy-bootstrap",
		"Service/k8s-ws-proxy",
		"ServiceAccount/k8s-ws-proxy",
		"ServiceAccount/k8s-ws-proxy-bootstrap",
		"ServiceMonitor/k8s-ws-proxy",
	}
	minimal := []string{
		"ClusterRole/k8s-ws-proxy",
		"ClusterRoleBinding/k8s-ws-proxy",
		"DaemonSet/k8s-ws-proxy",
		"Job/k8s-ws-proxy-bootstrap",
		"Role/k8s-ws-proxy-bootstrap",
		"RoleBinding/k8s-ws-proxy-bootstrap",
		"Service/k8s-ws-proxy",
		"ServiceAccount/k8s-ws-proxy",
		"ServiceAccount/k8s-ws-proxy-bootstrap",
	}
	forEachHelm(t, func(t *testing.T, h helm) {
		for _, c := range []struct {
			name string
			args []string
			want []string
		}{
			{"full", fullArgs, full},
			{"minimal", minimalArgs, minimal},
			// Optional APIs present but their features off: nothing extra.
			{"minimal with optional APIs", append(slices.Clone(minimalArgs), optionalAPIs...), minimal},
			// The operator provides the Secret: no hook objects at all.
			{"bootstrap off", append(slices.Clone(minimalArgs), "--set", "bootstrap.enabled=false"), []string{
				"ClusterRole/k8s-ws-proxy", "ClusterRoleBinding/k8s-ws-proxy", "DaemonSet/k8s-ws-proxy",
				"Service/k8s-ws-proxy", "ServiceAccount/k8s-ws-proxy"}},
		} {
			t.Run(c.name, func(t *testing.T) {
				ms := h.mustRender(t, "proxy", ns, c.args...)
				if got := ms.ids(); !slices.Equal(got, c.want) {
					t.Fatalf("objects:\n got %v\nwant %v", got, c.want)
				}
				for _, m := range ms {
					clusterScoped := m.Kind == "ClusterRole" || m.Kind == "ClusterRoleBinding"
					if clusterScoped != (m.Namespace == "") || (!clusterScoped && m.Namespace != ns) {
						t.Errorf("%s: namespace %q", m.id(), m.Namespace)
					}
				}
			})
		}
	})
}

// Gate 4: hook events, weights and delete policies.
func TestHookOrder(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		ms := h.mustRender(t, "proxy", ns, fullArgs...)
		weights := map[string]int{}
		for _, m := range ms {
			hook, isHook := m.Annotations["helm.sh/hook"]
			if !isHook {
				if m.Name == "k8s-ws-proxy-bootstrap" {
					t.Errorf("%s is not a hook", m.id())
				}
				continue
			}
			events := strings.Split(hook, ",")
			slices.Sort(events)
			if !slices.Equal(events, []string{"pre-install", "pre-upgrade"}) {
				t.Errorf("%s: hook events %q, want pre-install,pre-upgrade", m.id(), hook)
			}
			if p := m.Annotations["helm.sh/hook-delete-policy"]; p != "before-hook-creation" {
				t.Errorf("%s: delete policy %q, want exactly before-hook-creation (hook-succeeded would delete the ServiceAccount under a retrying Job)", m.id(), p)
			}
			w, err := strconv.Atoi(m.Annotations["helm.sh/hook-weight"])
			if err != nil {
				t.Errorf("%s: hook weight %q: %v", m.id(), m.Annotations["helm.sh/hook-weight"], err)
			}
			weights[m.Kind] = w
		}
		if got := sortedKeys(weights); !slices.Equal(got, []string{"Job", "Role", "RoleBinding", "ServiceAccount"}) {
			t.Fatalf("hook kinds %v", got)
		}
		sa, role, rb, job := weights["ServiceAccount"], weights["Role"], weights["RoleBinding"], weights["Job"]
		if !(sa < role && role <= rb && rb < job) {
			t.Errorf("weights SA %d, Role %d, RoleBinding %d, Job %d: want SA < Role <= RoleBinding < Job", sa, role, rb, job)
		}
		if sa != -20 || role != -15 || rb != -15 || job != -10 {
			t.Errorf("weights SA %d, Role %d, RoleBinding %d, Job %d: want -20, -15, -15, -10", sa, role, rb, job)
		}

		var j batchv1.Job
		ms.get(t, "Job", "k8s-ws-proxy-bootstrap").decode(t, &j)
		if j.Spec.BackoffLimit == nil || *j.Spec.BackoffLimit < 1 || *j.Spec.BackoffLimit > 3 {
			t.Errorf("backoffLimit %v, want small (1-3)", j.Spec.BackoffLimit)
		}
		if j.Spec.TTLSecondsAfterFinished == nil || *j.Spec.TTLSecondsAfterFinished <= 0 {
			t.Errorf("ttlSecondsAfterFinished not set")
		}
		if d := j.Spec.ActiveDeadlineSeconds; d == nil || time.Duration(*d)*time.Second >= 5*time.Minute {
			t.Errorf("activeDeadlineSeconds %v: must end before Helm's default 5m hook timeout", d)
		}
		pod := j.Spec.Template.Spec
		if pod.ServiceAccountName != "k8s-ws-proxy-bootstrap" || pod.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("job pod: serviceAccountName %q restartPolicy %q", pod.ServiceAccountName, pod.RestartPolicy)
		}
		if len(pod.Containers) != 1 || len(pod.Containers[0].Command) != 0 ||
			len(pod.Containers[0].Args) == 0 || pod.Containers[0].Args[0] != "bootstrap-secret" {
			t.Fatalf("job must run the image's own binary with bootstrap-secret: %+v", pod.Containers)
		}
		c := pod.Containers[0]
		if !slices.Contains(c.Args, "--secret-name=k8s-ws-proxy-hmac") || !slices.Contains(c.Args, "--key-name=key") {
			t.Errorf("job args %v", c.Args)
		}
		if len(c.Env) != 1 || c.Env[0].Name != "POD_NAMESPACE" || c.Env[0].ValueFrom == nil ||
			c.Env[0].ValueFrom.FieldRef == nil || c.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
			t.Errorf("POD_NAMESPACE must come from the downward API: %+v", c.Env)
		}

		var rb2 rbacv1.RoleBinding
		ms.get(t, "RoleBinding", "k8s-ws-proxy-bootstrap").decode(t, &rb2)
		if rb2.RoleRef.Kind != "Role" || rb2.RoleRef.Name != "k8s-ws-proxy-bootstrap" || len(rb2.Subjects) != 1 ||
			rb2.Subjects[0].Kind != "ServiceAccount" || rb2.Subjects[0].Name != "k8s-ws-proxy-bootstrap" || rb2.Subjects[0].Namespace != ns {
			t.Errorf("hook RoleBinding %+v", rb2)
		}
	})
}

// Gate 5: the hook Role, and the proxy's ClusterRole, rule by rule.
func TestRBACRules(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		for _, secret := range []string{"k8s-ws-proxy-hmac", "custom-key"} {
			ms := h.mustRender(t, "proxy", ns, append(slices.Clone(minimalArgs), "--set", "hmacSecret.name="+secret)...)
			var role rbacv1.Role
			ms.get(t, "Role", "k8s-ws-proxy-bootstrap").decode(t, &role)
			want := []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
				{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secret}, Verbs: []string{"get"}},
			}
			if !reflect.DeepEqual(role.Rules, want) {
				t.Errorf("hook Role rules:\n got %+v\nwant %+v", role.Rules, want)
			}
			var cr rbacv1.ClusterRole
			ms.get(t, "ClusterRole", "k8s-ws-proxy").decode(t, &cr)
			wantCR := []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
				{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create", "get"}},
			}
			if !reflect.DeepEqual(cr.Rules, wantCR) || cr.AggregationRule != nil {
				t.Errorf("ClusterRole rules:\n got %+v\nwant %+v", cr.Rules, wantCR)
			}
			var crb rbacv1.ClusterRoleBinding
			ms.get(t, "ClusterRoleBinding", "k8s-ws-proxy").decode(t, &crb)
			if crb.RoleRef.Name != "k8s-ws-proxy" || crb.RoleRef.Kind != "ClusterRole" || len(crb.Subjects) != 1 ||
				crb.Subjects[0].Name != "k8s-ws-proxy" || crb.Subjects[0].Namespace != ns {
				t.Errorf("ClusterRoleBinding %+v", crb)
			}
			var ds appsv1.DaemonSet
			ms.get(t, "DaemonSet", "k8s-ws-proxy").decode(t, &ds)
			if v := ds.Spec.Template.Spec.Volumes[0]; v.Secret == nil || v.Secret.SecretName != secret {
				t.Errorf("DaemonSet mounts %+v, want Secret %s", v, secret)
			}
		}
	})
}

// Attach needs pods/attach through the API server: granted only on request.
func TestRBACAllowAttach(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		ms := h.mustRender(t, "proxy", ns, append(slices.Clone(minimalArgs), "--set", "rbac.allowAttach=true")...)
		var cr rbacv1.ClusterRole
		ms.get(t, "ClusterRole", "k8s-ws-proxy").decode(t, &cr)
		want := []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create", "get"}},
			{APIGroups: []string{""}, Resources: []string{"pods/attach"}, Verbs: []string{"create", "get"}},
		}
		if !reflect.DeepEqual(cr.Rules, want) {
			t.Errorf("ClusterRole rules with allowAttach:\n got %+v\nwant %+v", cr.Rules, want)
		}
	})
}

// Gate 6: the names do not depend on the release name.
func TestCanonicalNamesAcrossReleases(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		a := h.mustRender(t, "proxy", ns, fullArgs...)
		b := h.mustRender(t, "a-completely-different-release", ns, fullArgs...)
		if !slices.Equal(a.ids(), b.ids()) {
			t.Fatalf("names differ between releases:\n%v\n%v", a.ids(), b.ids())
		}
		for _, m := range a {
			if strings.Contains(m.Name, "proxy-proxy") || !strings.HasPrefix(m.Name, "k8s-ws-proxy") {
				t.Errorf("%s is not a canonical name", m.id())
			}
		}
	})
}

// Gate 7: every image has an explicit registry; global.imageRegistry and
// image.digest reach every image, hooks included.
func TestImages(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		check := func(t *testing.T, args []string, want string) {
			t.Helper()
			ms := h.mustRender(t, "proxy", ns, args...)
			var images []string
			for _, m := range ms {
				images = append(images, allImages(m.Obj)...)
			}
			// One per workload: the DaemonSet's and the hook Job's.
			if len(images) != 2 {
				t.Fatalf("found %d images, want 2 (DaemonSet and hook Job): %v", len(images), images)
			}
			for _, img := range images {
				if _, ok := registryHost(img); !ok {
					t.Errorf("image %q has no explicit registry host", img)
				}
				if img != want {
					t.Errorf("image %q, want %q", img, want)
				}
			}
		}
		t.Run("default registry", func(t *testing.T) {
			check(t, minimalArgs, "ghcr.io/k8s-ws-proxy/k8s-ws-proxy:v0.1.0")
		})
		t.Run("global.imageRegistry", func(t *testing.T) {
			check(t, append(slices.Clone(minimalArgs), "--set", "global.imageRegistry=harbor.example.com/ghcr-cache"),
				"harbor.example.com/ghcr-cache/k8s-ws-proxy/k8s-ws-proxy:v0.1.0")
		})
		t.Run("registry with port", func(t *testing.T) {
			check(t, append(slices.Clone(minimalArgs), "--set", "image.registry=localhost:5000"),
				"localhost:5000/k8s-ws-proxy/k8s-ws-proxy:v0.1.0")
		})
		t.Run("digest", func(t *testing.T) {
			d := "sha256:" + strings.Repeat("ab", 32)
			check(t, append(slices.Clone(minimalArgs), "--set", "image.digest="+d, "--set", "global.imageRegistry=registry.example.org"),
				"registry.example.org/k8s-ws-proxy/k8s-ws-proxy:v0.1.0@"+d)
		})
		t.Run("full", func(t *testing.T) {
			check(t, fullArgs, "ghcr.io/k8s-ws-proxy/k8s-ws-proxy:v0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
		})
	})
}

func TestRegistryHostRule(t *testing.T) {
	for ref, want := range map[string]bool{
		"ghcr.io/a/b:1": true, "localhost:5000/a:1": true, "localhost/a:1": true, "registry:5000/a": true,
		"nginx:1": false, "library/nginx": false, "myorg/app:1": false,
	} {
		if _, ok := registryHost(ref); ok != want {
			t.Errorf("registryHost(%q) = %v, want %v", ref, ok, want)
		}
	}
	m := map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"image": "a.io/x"}},
		"initContainers": []any{map[string]any{"image": "b.io/y"}}, "image": "not-a-container"}}
	if got := allImages(m); len(got) != 2 {
		t.Errorf("allImages = %v", got)
	}
}

// Gate 8: security settings and the DaemonSet's contract with the proxy.
func TestPodSecurity(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		for name, args := range map[string][]string{"minimal": minimalArgs, "full": fullArgs} {
			t.Run(name, func(t *testing.T) {
				ms := h.mustRender(t, "proxy", ns, args...)
				pods := podSpecs(ms)
				if got := sortedKeys(pods); !slices.Equal(got, []string{"DaemonSet/k8s-ws-proxy", "Job/k8s-ws-proxy-bootstrap"}) {
					t.Fatalf("workloads %v", got)
				}
				for id, pod := range pods {
					for _, k := range []string{"hostNetwork", "hostPID", "hostIPC", "hostUsers"} {
						if v, ok := pod[k]; ok && v != false {
							t.Errorf("%s: %s = %v", id, k, v)
						}
					}
					if dig(pod, "securityContext", "runAsNonRoot") != true ||
						dig(pod, "securityContext", "seccompProfile", "type") != "RuntimeDefault" {
						t.Errorf("%s: pod securityContext %v", id, pod["securityContext"])
					}
					vols, _ := pod["volumes"].([]any)
					for _, v := range vols {
						vm := v.(map[string]any)
						if _, ok := vm["hostPath"]; ok {
							t.Errorf("%s: hostPath volume %v", id, vm)
						}
						if _, ok := vm["secret"]; !ok {
							t.Errorf("%s: volume %v is not a Secret", id, vm["name"])
						}
					}
					for _, c := range containersOf(pod) {
						sc, _ := c["securityContext"].(map[string]any)
						if sc["allowPrivilegeEscalation"] != false || sc["readOnlyRootFilesystem"] != true ||
							sc["privileged"] == true || dig(sc, "seccompProfile", "type") != "RuntimeDefault" {
							t.Errorf("%s/%s: securityContext %v", id, c["name"], sc)
						}
						if drop, _ := dig(sc, "capabilities", "drop").([]any); !reflect.DeepEqual(drop, []any{"ALL"}) {
							t.Errorf("%s/%s: capabilities.drop %v, want [ALL]", id, c["name"], drop)
						}
						if add := dig(sc, "capabilities", "add"); add != nil {
							t.Errorf("%s/%s: capabilities.add %v", id, c["name"], add)
						}
						mounts, _ := c["volumeMounts"].([]any)
						for _, mt := range mounts {
							mm := mt.(map[string]any)
							if _, ok := mm["subPath"]; ok {
								t.Errorf("%s/%s: subPath mount %v never updates", id, c["name"], mm)
							}
							if _, ok := mm["subPathExpr"]; ok {
								t.Errorf("%s/%s: subPathExpr mount %v", id, c["name"], mm)
							}
							if mm["readOnly"] != true {
								t.Errorf("%s/%s: writable mount %v", id, c["name"], mm)
							}
						}
						ports, _ := c["ports"].([]any)
						for _, p := range ports {
							if _, ok := p.(map[string]any)["hostPort"]; ok {
								t.Errorf("%s/%s: hostPort %v", id, c["name"], p)
							}
						}
						if dig(c, "resources", "requests") == nil || dig(c, "resources", "limits", "memory") == nil {
							t.Errorf("%s/%s: resources %v", id, c["name"], c["resources"])
						}
					}
				}
			})
		}
	})
}

// proxyFlags are the flags of `k8s-ws-proxy serve`; the DaemonSet may pass
// no other.
var proxyFlags = []string{"listen", "health-listen", "key-dir", "audience", "leeway", "max-ttl", "node-name",
	"exec-transport", "kubeconfig", "max-frame-size", "tls-cert-file", "tls-key-file", "client-ca-file",
	"client-allowed-subjects", "allowed-origins", "max-sessions", "max-session-lifetime", "idle-timeout",
	"ping-interval", "shutdown-grace", "log-level", "allowed-namespaces", "denied-namespaces",
	"observer-scrollback", "observer-notice", "resume-window", "resume-buffer"}

func TestDaemonSetContract(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		for name, args := range map[string][]string{"minimal": minimalArgs, "full": fullArgs} {
			t.Run(name, func(t *testing.T) {
				ms := h.mustRender(t, "proxy", ns, args...)
				var ds appsv1.DaemonSet
				ms.get(t, "DaemonSet", "k8s-ws-proxy").decode(t, &ds)
				spec := ds.Spec.Template.Spec
				if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
					ds.Spec.UpdateStrategy.RollingUpdate == nil || ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable == nil {
					t.Errorf("updateStrategy %+v", ds.Spec.UpdateStrategy)
				}
				if spec.NodeSelector["kubernetes.io/os"] != "linux" {
					t.Errorf("nodeSelector %v", spec.NodeSelector)
				}
				wantTol := []corev1.Toleration{{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
				if !reflect.DeepEqual(spec.Tolerations, wantTol) {
					t.Errorf("tolerations %+v, want %+v", spec.Tolerations, wantTol)
				}
				if spec.ServiceAccountName != "k8s-ws-proxy" {
					t.Errorf("serviceAccountName %q", spec.ServiceAccountName)
				}
				for k, v := range ds.Spec.Selector.MatchLabels {
					if ds.Spec.Template.Labels[k] != v {
						t.Errorf("selector %s=%s does not match the pod template", k, v)
					}
				}
				if len(spec.Containers) != 1 {
					t.Fatalf("containers %d", len(spec.Containers))
				}
				c := spec.Containers[0]
				if c.Args[0] != "serve" {
					t.Errorf("args[0] %q, want serve", c.Args[0])
				}
				flags := map[string]string{}
				for _, a := range c.Args[1:] {
					k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
					if !strings.HasPrefix(a, "--") || !ok || !slices.Contains(proxyFlags, k) {
						t.Errorf("arg %q is not a --flag=value of serve", a)
					}
					flags[k] = v
				}
				if flags["node-name"] != "$(NODE_NAME)" {
					t.Errorf("--node-name=%q", flags["node-name"])
				}
				var nodeEnv *corev1.EnvVar
				for i := range c.Env {
					if c.Env[i].Name == "NODE_NAME" {
						nodeEnv = &c.Env[i]
					}
				}
				if nodeEnv == nil || nodeEnv.ValueFrom == nil || nodeEnv.ValueFrom.FieldRef == nil || nodeEnv.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
					t.Errorf("NODE_NAME must come from the downward API spec.nodeName: %+v", c.Env)
				}
				grace, err := time.ParseDuration(flags["shutdown-grace"])
				if err != nil || spec.TerminationGracePeriodSeconds == nil ||
					time.Duration(*spec.TerminationGracePeriodSeconds)*time.Second <= grace {
					t.Errorf("terminationGracePeriodSeconds %v must exceed --shutdown-grace %q", spec.TerminationGracePeriodSeconds, flags["shutdown-grace"])
				}
				ports := map[string]int32{}
				for _, p := range c.Ports {
					ports[p.Name] = p.ContainerPort
				}
				if flags["listen"] != fmt.Sprintf(":%d", ports["ws"]) || flags["health-listen"] != fmt.Sprintf(":%d", ports["health"]) {
					t.Errorf("listen flags %q/%q vs ports %v", flags["listen"], flags["health-listen"], ports)
				}
				for probe, path := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
					if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || probe.HTTPGet.Port.String() != "health" {
						t.Errorf("probe for %s: %+v", path, probe)
					}
				}
				// The key Secret is mounted whole at --key-dir, every data key
				// a file (rotation adds keys beside the old ones).
				var keyMount *corev1.VolumeMount
				for i := range c.VolumeMounts {
					if c.VolumeMounts[i].MountPath == flags["key-dir"] {
						keyMount = &c.VolumeMounts[i]
					}
				}
				if keyMount == nil || keyMount.SubPath != "" {
					t.Fatalf("no whole-directory mount at --key-dir %q: %+v", flags["key-dir"], c.VolumeMounts)
				}
				for _, v := range spec.Volumes {
					if v.Name == keyMount.Name {
						if v.Secret == nil || v.Secret.SecretName != "k8s-ws-proxy-hmac" || len(v.Secret.Items) != 0 ||
							(v.Secret.Optional != nil && *v.Secret.Optional) {
							t.Errorf("key volume %+v", v)
						}
					}
				}
				if name == "full" {
					for _, f := range []string{"tls-cert-file", "tls-key-file", "client-ca-file"} {
						if !strings.HasPrefix(flags[f], "/etc/k8s-ws-proxy/") {
							t.Errorf("--%s=%q", f, flags[f])
						}
					}
					if flags["client-allowed-subjects"] != "guacd" || flags["allowed-origins"] != "https://guacamole.example.com" {
						t.Errorf("flags %v", flags)
					}
				}

				var svc corev1.Service
				ms.get(t, "Service", "k8s-ws-proxy").decode(t, &svc)
				if svc.Spec.InternalTrafficPolicy == nil || *svc.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal {
					t.Errorf("Service internalTrafficPolicy %v, want Local", svc.Spec.InternalTrafficPolicy)
				}
				if !reflect.DeepEqual(svc.Spec.Selector, ds.Spec.Selector.MatchLabels) {
					t.Errorf("Service selector %v != DaemonSet selector %v", svc.Spec.Selector, ds.Spec.Selector.MatchLabels)
				}
			})
		}
	})
}

func TestNetworkPolicyAdmitsOnlyGuacd(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		ms := h.mustRender(t, "proxy", ns, fullArgs...)
		var np networkingv1.NetworkPolicy
		ms.get(t, "NetworkPolicy", "k8s-ws-proxy").decode(t, &np)
		if !reflect.DeepEqual(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
			t.Errorf("policyTypes %v", np.Spec.PolicyTypes)
		}
		if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "k8s-ws-proxy" {
			t.Errorf("podSelector %v", np.Spec.PodSelector)
		}
		if len(np.Spec.Ingress) != 2 {
			t.Fatalf("ingress rules %d, want guacd + metrics", len(np.Spec.Ingress))
		}
		g := np.Spec.Ingress[0]
		if len(g.From) != 1 || g.From[0].PodSelector == nil || g.From[0].PodSelector.MatchLabels["app.kubernetes.io/name"] != "guacd" ||
			g.From[0].NamespaceSelector == nil || g.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "guacamole" {
			t.Errorf("guacd peer %+v", g.From)
		}
		if len(g.Ports) != 1 || g.Ports[0].Port == nil || g.Ports[0].Port.String() != "ws" {
			t.Errorf("guacd ports %+v", g.Ports)
		}
		if m := np.Spec.Ingress[1]; len(m.Ports) != 1 || m.Ports[0].Port.String() != "health" {
			t.Errorf("metrics rule %+v", m)
		}

		// Without a namespaceSelector the peer is the release namespace only.
		ms = h.mustRender(t, "proxy", ns, append(slices.Clone(minimalArgs), "--set", "networkPolicy.enabled=true",
			"--set", "networkPolicy.guacd.podSelector.matchLabels.app=guacd")...)
		var local networkingv1.NetworkPolicy
		ms.get(t, "NetworkPolicy", "k8s-ws-proxy").decode(t, &local)
		if len(local.Spec.Ingress) != 1 || local.Spec.Ingress[0].From[0].NamespaceSelector != nil ||
			!reflect.DeepEqual(local.Spec.Ingress[0].From[0].PodSelector.MatchLabels, map[string]string{"app": "guacd"}) {
			t.Errorf("ingress %+v", local.Spec.Ingress)
		}
	})
}

// Gate 9: helm lint --strict, and the values schema.
func TestLintAndSchema(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		for name, args := range map[string][]string{
			"defaults":     nil,
			"minimal":      minimalArgs,
			"existing tls": {"-f", testdata("values-existing-tls.yaml")},
		} {
			t.Run("lint "+name, func(t *testing.T) {
				all := append([]string{"lint", "--strict", h.chart, "--kube-version", "1.37.2"}, args...)
				out, stderr, err := h.run(t, all...)
				if err != nil || strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
					t.Fatalf("helm lint --strict: %v\n%s%s", err, out, stderr)
				}
				if !strings.Contains(out, "0 chart(s) failed") {
					t.Fatalf("unexpected lint output:\n%s", out)
				}
			})
		}
		for name, c := range map[string]struct {
			file string
			want []string
		}{
			"wrong type":      {"values-wrong-type.yaml", []string{"port", "integer"}},
			"unknown key":     {"values-unknown-key.yaml", []string{"imageRegistry"}},
			"bad exec mode":   {"", []string{"execTransport"}},
			"bad digest form": {"", []string{"digest"}},
		} {
			t.Run("schema "+name, func(t *testing.T) {
				args := []string{"-f", testdata(c.file)}
				switch name {
				case "bad exec mode":
					args = append(slices.Clone(minimalArgs), "--set", "proxy.execTransport=grpc")
				case "bad digest form":
					args = append(slices.Clone(minimalArgs), "--set", "image.digest=latest")
				}
				_, stderr, err := h.template(t, "proxy", ns, args...)
				if err == nil {
					t.Fatal("schema accepted invalid values")
				}
				if !strings.Contains(stderr, "schema") {
					t.Errorf("failure is not a schema failure:\n%s", stderr)
				}
				for _, w := range c.want {
					if !strings.Contains(stderr, w) {
						t.Errorf("schema error does not mention %q:\n%s", w, stderr)
					}
				}
				all := append([]string{"lint", "--strict", h.chart, "--kube-version", "1.37.2"}, args...)
				if out, _, err := h.run(t, all...); err == nil {
					t.Errorf("helm lint accepted invalid values:\n%s", out)
				}
			})
		}
	})
}
