package cluster

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac/hmactest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// TestRBACNamespacesAndPolicy installs the chart's proxy identity with
// rbac.namespaces [apps, team-b] and the default namespace policy: the API
// server's authorizer grants exec in exactly those namespaces (kube-system
// and every other namespace denied), a real exec in apps works through the
// proxy running as that ServiceAccount, a token for a pod outside the list
// is stopped by the API server (the proxy may not even read the pod), and a
// token for kube-system is refused by the proxy itself before the upgrade.
func TestRBACNamespacesAndPolicy(t *testing.T) {
	const ns = "scoped-proxy"
	ensureNamespace(t, ns)
	ensureNamespace(t, "team-b")
	ensureNamespace(t, "team-c")
	workload(t) // creates the apps namespace and its pod
	objs := renderChart(t, tools.HelmV3Version, ns, "--set", "rbac.namespaces={"+workloadNamespace+",team-b}")
	var apply []*unstructured.Unstructured
	var roles []string
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRole", "ClusterRoleBinding":
			t.Fatalf("rbac.namespaces rendered %s %s", o.GetKind(), o.GetName())
		case "Role", "RoleBinding":
			if o.GetName() == proxyServiceAccount {
				apply = append(apply, o)
				if o.GetKind() == "Role" {
					roles = append(roles, o.GetNamespace())
				}
			}
		case "ServiceAccount":
			if o.GetName() == proxyServiceAccount {
				apply = append(apply, o)
			}
		}
	}
	if strings.Join(roles, ",") != workloadNamespace+",team-b" {
		t.Fatalf("Roles rendered in %v", roles)
	}
	newApplier(t).mustApply(t, apply...)

	for _, tc := range []struct {
		namespace string
		allowed   bool
	}{
		{workloadNamespace, true}, {"team-b", true},
		{"team-c", false}, {"default", false}, {"kube-system", false}, {ns, false},
	} {
		for _, ra := range []authorizationv1.ResourceAttributes{
			{Namespace: tc.namespace, Verb: "create", Resource: "pods", Subresource: "exec"},
			{Namespace: tc.namespace, Verb: "get", Resource: "pods", Subresource: "exec"},
			{Namespace: tc.namespace, Verb: "get", Resource: "pods"},
		} {
			waitAuthorized(t, ns, proxyServiceAccount, ra, tc.allowed)
		}
	}
	// Nothing cluster-wide, nothing else anywhere.
	for _, ra := range []authorizationv1.ResourceAttributes{
		{Verb: "list", Resource: "pods"},
		{Namespace: workloadNamespace, Verb: "create", Resource: "pods", Subresource: "attach"},
		{Namespace: workloadNamespace, Verb: "get", Resource: "secrets"},
	} {
		waitAuthorized(t, ns, proxyServiceAccount, ra, false)
	}

	// The proxy as that ServiceAccount, with the chart's default policy.
	dir := t.TempDir()
	key := hmactest.NewKey(t)
	keyDir := filepath.Join(dir, "keys")
	filewatchtest.WriteSecretDir(t, keyDir, map[string][]byte{"key": key})
	signer, err := hmac.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	args := testenv.ServeArgs(keyDir, serviceAccountKubeconfig(t, ns, proxyServiceAccount), workloadNode, "auto", "--denied-namespaces", "kube-system")
	p := testenv.StartProxy(t, testenv.ProxyOptions{Bin: proxyBin, Args: args, StopWithin: 30 * time.Second})
	mint := func(namespace, command string) string {
		c := testenv.Claims(testenv.Target{Namespace: namespace, Pod: workloadPod, Container: workloadContainer, Node: workloadNode}, command)
		c.TTY, c.Stdin = true, true
		return testenv.Mint(t, signer, c)
	}

	g, resp, err := testenv.DialGuacd(p.Addr, workloadNamespace, mint(workloadNamespace, "/bin/sh"), workloadContainer, "/bin/sh")
	if err != nil {
		t.Fatalf("exec in %s, which rbac.namespaces lists: %v (%v)", workloadNamespace, err, resp)
	}
	g.Resize(t, 80, 24)
	g.Send(t, "echo scoped-$((20+22))\r")
	g.WaitOutput(t, "scoped-42", time.Minute)
	g.Drop()

	// team-c is not listed: the API server refuses the proxy's pod lookup.
	if _, resp, err := testenv.DialGuacd(p.Addr, "team-c", mint("team-c", "true"), workloadContainer, "true"); err == nil || statusOf(resp) != http.StatusBadGateway {
		t.Errorf("session in team-c: %v (status %d), want 502 (the proxy's identity may not get the pod)", err, statusOf(resp))
	}
	p.WaitLog(10*time.Second, "session rejected", func(m map[string]any) bool { return m["reason"] == "pod_lookup_forbidden" })

	// kube-system: refused by the proxy's policy before anything is asked.
	if _, resp, err := testenv.DialGuacd(p.Addr, "kube-system", mint("kube-system", "true"), workloadContainer, "true"); err == nil || statusOf(resp) != http.StatusForbidden {
		t.Errorf("session in kube-system: %v (status %d), want 403", err, statusOf(resp))
	}
	p.WaitLog(10*time.Second, "session rejected", func(m map[string]any) bool { return m["reason"] == "namespace_denied" })
}
