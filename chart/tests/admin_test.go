package tests

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/proxy"
)

var adminArgs = []string{"-f", testdata("values-admin.yaml")}

// Off by default: no admin listener, no revocations file, nothing extra.
func TestAdminAndRevocationsOffByDefault(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		ms := h.mustRender(t, "proxy", "k8s-ws-proxy", fullArgs...)
		args, ds := proxyArgs(t, ms)
		for _, a := range args {
			if strings.HasPrefix(a, "--admin") || strings.HasPrefix(a, "--revocations") {
				t.Errorf("default render has %s", a)
			}
		}
		for _, p := range ds.Spec.Template.Spec.Containers[0].Ports {
			if p.Name == "admin" {
				t.Errorf("default render has the admin port")
			}
		}
		for _, m := range ms {
			if strings.HasSuffix(m.Name, "-admin") || strings.HasSuffix(m.Name, "-revocations") {
				t.Errorf("default render has %s", m.id())
			}
		}
	})
}

// The admin port is reachable only inside the cluster: a container port
// without hostPort on a pod without host networking, a headless ClusterIP
// Service, and with NetworkPolicy only from adminFrom. The revocations
// ConfigMap is mounted as a whole directory (a subPath mount is never
// updated) and holds what the proxy's own parser accepts.
func TestAdminAndRevocationsRender(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		ms := h.mustRender(t, "proxy", "k8s-ws-proxy", adminArgs...)
		args, ds := proxyArgs(t, ms)
		for _, want := range []string{"--admin-listen=:8081", "--admin-max-ttl=2m", "--max-sessions-per-subject=3",
			"--revocations-file=/etc/k8s-ws-proxy/revocations/revocations"} {
			if !slices.Contains(args, want) {
				t.Errorf("args lack %s: %v", want, args)
			}
		}
		pod := ds.Spec.Template.Spec
		if pod.HostNetwork {
			t.Error("hostNetwork")
		}
		admin := false
		for _, p := range pod.Containers[0].Ports {
			if p.HostPort != 0 {
				t.Errorf("port %s has hostPort %d", p.Name, p.HostPort)
			}
			admin = admin || p.Name == "admin" && p.ContainerPort == 8081
		}
		if !admin {
			t.Errorf("no admin container port: %+v", pod.Containers[0].Ports)
		}

		var svc corev1.Service
		ms.get(t, "Service", "k8s-ws-proxy-admin").decode(t, &svc)
		if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.ClusterIP != corev1.ClusterIPNone ||
			len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8081 || svc.Spec.Ports[0].TargetPort.String() != "admin" ||
			svc.Spec.Ports[0].NodePort != 0 {
			t.Errorf("admin Service %+v", svc.Spec)
		}
		var main corev1.Service
		ms.get(t, "Service", "k8s-ws-proxy").decode(t, &main)
		for _, p := range main.Spec.Ports {
			if p.Port == 8081 {
				t.Errorf("the session Service exposes the admin port")
			}
		}

		var cm corev1.ConfigMap
		ms.get(t, "ConfigMap", "k8s-ws-proxy-revocations").decode(t, &cm)
		rv, err := proxy.ParseRevocations([]byte(cm.Data["revocations"]))
		if err != nil || !rv.Subjects["mallory"] || !rv.TokenIDs["0123456789abcdef"] || len(rv.Subjects)+len(rv.TokenIDs) != 2 {
			t.Errorf("ConfigMap %q parses as %+v, %v", cm.Data["revocations"], rv, err)
		}
		mounted := false
		for _, m := range pod.Containers[0].VolumeMounts {
			if m.Name == "revocations" {
				mounted = m.MountPath == "/etc/k8s-ws-proxy/revocations" && m.SubPath == "" && m.ReadOnly
			}
		}
		vol := false
		for _, v := range pod.Volumes {
			if v.Name == "revocations" {
				vol = v.ConfigMap != nil && v.ConfigMap.Name == "k8s-ws-proxy-revocations"
			}
		}
		if !mounted || !vol {
			t.Errorf("revocations mounted %v, volume %v", mounted, vol)
		}

		var np networkingv1.NetworkPolicy
		ms.get(t, "NetworkPolicy", "k8s-ws-proxy").decode(t, &np)
		var adminPeers []networkingv1.NetworkPolicyPeer
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port != nil && p.Port.String() == "admin" {
					adminPeers = append(adminPeers, rule.From...)
				}
			}
		}
		if len(adminPeers) != 1 || adminPeers[0].PodSelector == nil ||
			adminPeers[0].PodSelector.MatchLabels["app.kubernetes.io/name"] != "session-control-plane" {
			t.Errorf("admin port peers %+v", adminPeers)
		}
	})
}

// An existing ConfigMap is mounted and not rendered; without adminFrom the
// NetworkPolicy admits nobody to the admin port; admin.service.enabled=false
// renders no admin Service.
func TestAdminAndRevocationsVariants(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		ms := h.mustRender(t, "proxy", "k8s-ws-proxy", append(slices.Clone(adminArgs),
			"--set", "revocations.entries=null", "--set", "revocations.existingConfigMap=cp-revocations",
			"--set", "revocations.key=list", "--set", "networkPolicy.adminFrom=null", "--set", "admin.service.enabled=false")...)
		args, ds := proxyArgs(t, ms)
		if !slices.Contains(args, "--revocations-file=/etc/k8s-ws-proxy/revocations/list") {
			t.Errorf("args %v", args)
		}
		for _, m := range ms {
			if m.Kind == "ConfigMap" || strings.HasSuffix(m.Name, "-admin") {
				t.Errorf("rendered %s", m.id())
			}
		}
		found := false
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.Name == "revocations" && v.ConfigMap != nil && v.ConfigMap.Name == "cp-revocations" &&
				len(v.ConfigMap.Items) == 1 && v.ConfigMap.Items[0].Key == "list" {
				found = true
			}
		}
		if !found {
			t.Errorf("volumes %+v", ds.Spec.Template.Spec.Volumes)
		}
		var np networkingv1.NetworkPolicy
		ms.get(t, "NetworkPolicy", "k8s-ws-proxy").decode(t, &np)
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				if p.Port != nil && p.Port.String() == "admin" {
					t.Errorf("admin port admitted from %+v", rule.From)
				}
			}
		}
	})
}

func TestAdminAndRevocationsRefusals(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		for _, c := range []struct {
			name string
			set  []string
			want string
		}{
			{"admin port is the session port", []string{"admin.port=8080"}, "admin.port (8080) must differ"},
			{"admin port is the health port", []string{"admin.port=9090"}, "admin.port (9090) must differ"},
			{"entries and an existing ConfigMap", []string{"revocations.existingConfigMap=x"}, "mutually exclusive"},
			{"an entry that is not sub: or jti:", []string{"revocations.entries={mallory}"}, "revocations"},
			{"an empty entry value", []string{"revocations.entries={sub: }"}, "revocations"},
		} {
			t.Run(c.name, func(t *testing.T) {
				args := slices.Clone(adminArgs)
				for _, s := range c.set {
					args = append(args, "--set", s)
				}
				_, stderr, err := h.template(t, "proxy", "k8s-ws-proxy", args...)
				if err == nil || !strings.Contains(stderr, c.want) {
					t.Fatalf("rendered (%v): %s", err, stderr)
				}
			})
		}
	})
}

// The admin and revocations args are flags the real binary parses.
func TestChartAdminArgsParseWithTheBinary(t *testing.T) {
	checkArgsWithBinary(t, map[string][]string{"admin and revocations": adminArgs})
}
