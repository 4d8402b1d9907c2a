package cluster

import (
	"bytes"
	"context"
	"net/url"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// execURL is the pods/exec URL of the workload's container for command.
func execURL(cfg *rest.Config, command []string, tty, stdin, stderr bool) *url.URL {
	cs := kubernetes.NewForConfigOrDie(cfg)
	return cs.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(workloadNamespace).Name(workloadPod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: workloadContainer, Command: command,
			Stdin: stdin, Stdout: true, Stderr: stderr, TTY: tty,
		}, scheme.ParameterCodec).URL()
}

// TestProxyClusterRoleSufficientAndMinimal is issue 4's test 3: the chart's
// ClusterRole lets the proxy's ServiceAccount exec (both transports, for
// real, through the API server into the node's kubelet) and nothing it does
// not need, as the API server's own authorizer answers.
func TestProxyClusterRoleSufficientAndMinimal(t *testing.T) {
	chartInstalled(t)
	kl := workload(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	exec := authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "create", Resource: "pods", Subresource: "exec"}
	waitAuthorized(t, releaseNamespace, proxyServiceAccount, exec, true)

	for _, tc := range []struct {
		ra   authorizationv1.ResourceAttributes
		want bool
	}{
		// What the proxy does: look the pod up, open exec (SPDY POSTs
		// create; a WebSocket upgrade is a GET and needs get and, from
		// 1.35, create).
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "get", Resource: "pods"}, true},
		{authorizationv1.ResourceAttributes{Namespace: "another-team", Verb: "get", Resource: "pods"}, true},
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "create", Resource: "pods", Subresource: "exec"}, true},
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "get", Resource: "pods", Subresource: "exec"}, true},
		// Nothing else about pods.
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "list", Resource: "pods"}, false},
		{authorizationv1.ResourceAttributes{Verb: "list", Resource: "pods"}, false},
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "watch", Resource: "pods"}, false},
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "create", Resource: "pods"}, false},
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "update", Resource: "pods"}, false},
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "patch", Resource: "pods"}, false},
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "delete", Resource: "pods"}, false},
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "create", Resource: "pods", Subresource: "portforward"}, false},
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "get", Resource: "pods", Subresource: "log"}, false},
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "patch", Resource: "pods", Subresource: "ephemeralcontainers"}, false},
		// No secrets: not even the proxy's own HMAC key (it is mounted).
		{authorizationv1.ResourceAttributes{Namespace: releaseNamespace, Verb: "get", Resource: "secrets", Name: "k8s-ws-proxy-hmac"}, false},
		{authorizationv1.ResourceAttributes{Namespace: workloadNamespace, Verb: "list", Resource: "secrets"}, false},
		// No way around pods/exec through the kubelet API.
		{authorizationv1.ResourceAttributes{Verb: "get", Resource: "nodes", Subresource: "proxy", Name: workloadNode}, false},
		{authorizationv1.ResourceAttributes{Verb: "create", Resource: "nodes", Subresource: "proxy", Name: workloadNode}, false},
		{authorizationv1.ResourceAttributes{Verb: "get", Resource: "nodes", Name: workloadNode}, false},
		// No identity tricks.
		{authorizationv1.ResourceAttributes{Verb: "impersonate", Resource: "users"}, false},
		{authorizationv1.ResourceAttributes{Namespace: releaseNamespace, Verb: "create", Resource: "serviceaccounts", Subresource: "token"}, false},
	} {
		got, reason, err := canI(ctx, releaseNamespace, proxyServiceAccount, tc.ra)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("can %s %s/%s %q in %q = %v (%s), want %v", tc.ra.Verb, tc.ra.Resource, tc.ra.Subresource, tc.ra.Name, tc.ra.Namespace, got, reason, tc.want)
		}
	}

	// For real, as the proxy's ServiceAccount: exec through the API server
	// into the node's kubelet, with each transport the proxy may use.
	cfg, err := api.ServiceAccountConfig(ctx, releaseNamespace, proxyServiceAccount)
	if err != nil {
		t.Fatal(err)
	}
	u := execURL(cfg, []string{"echo", "exec-ok"}, false, false, false)
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", u.String())
	if err != nil {
		t.Fatal(err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", u)
	if err != nil {
		t.Fatal(err)
	}
	for name, ex := range map[string]remotecommand.Executor{"websocket": ws, "spdy": spdy} {
		var out bytes.Buffer
		if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out}); err != nil {
			t.Errorf("%s exec as the proxy's ServiceAccount: %v", name, err)
			continue
		}
		if out.String() != "exec-ok\n" {
			t.Errorf("%s exec output %q, want %q", name, out.String(), "exec-ok\n")
		}
	}

	// And the kubelet API through nodes/proxy is refused.
	cs := kubernetes.NewForConfigOrDie(cfg)
	err = cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", workloadNode, "proxy", "exec", workloadNamespace, workloadPod, workloadContainer).
		Param("command", "id").Param("output", "1").Do(ctx).Error()
	if !apierrors.IsForbidden(err) {
		t.Errorf("nodes/proxy exec as the proxy's ServiceAccount: %v, want Forbidden", err)
	}
	// Secrets, for real.
	if _, err := cs.CoreV1().Secrets(releaseNamespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets as the proxy's ServiceAccount: %v, want Forbidden", err)
	}

	// The kubelet was only ever called by the API server, with its
	// --kubelet-client-certificate.
	reqs := kl.requests()
	if reqs["kube-apiserver-kubelet-client"] == 0 || len(reqs) != 1 {
		t.Errorf("fake kubelet clients %v, want only kube-apiserver-kubelet-client", reqs)
	}
}
