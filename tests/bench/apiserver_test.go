package bench

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeapi"
)

// BenchmarkKubeAPIServer runs bulk, echo and setup through a real
// kube-apiserver (internal/kubeapi) in front of the backend as its
// kubelet: direct is package exec to the API server, the relay sits in
// front of the API server, and the proxy speaks WebSocket (v5) to it, as
// in production. The API server speaks SPDY to the kubelet on every path.
// All three authenticate as the same system:masters user.
func BenchmarkKubeAPIServer(b *testing.B) {
	e := newAPIEnv(b)
	st := e.stack(b, spec{group: groupAPI, tr: exec.TransportWebSocket, args: []string{"--frame-relay=auto"}})
	results.note("kube-apiserver: internal/kubeapi (real kube-apiserver and etcd); its own CPU is not in the client+middle+backend figure")
	b.Run("bulk", func(b *testing.B) { bulk(b, st) })
	b.Run("echo", func(b *testing.B) { echo(b, st) })
	b.Run("setup", func(b *testing.B) { setup(b, st) })
}

// newAPIEnv starts etcd and kube-apiserver, the backend as the node's
// kubelet (serving a certificate from the API server's kubelet CA,
// requiring the API server's client certificate), registers its Node and
// Pod as a kubelet and the scheduler would, and the relay in front of
// the API server.
func newAPIEnv(tb testing.TB) *env {
	tb.Helper()
	// A cold run builds kube-apiserver and etcd first (minutes).
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	api, err := kubeapi.Start(ctx, kubeapi.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := api.Stop(); err != nil {
			tb.Error(err)
		}
	})
	certPEM, keyPEM, err := api.KubeletCA.Issue(kubeapi.CertSpec{
		CommonName: "system:node:" + benchNode, Organizations: []string{"system:nodes"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{benchNode}, Server: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	backend := startBackend(tb, benchNamespace+"/"+benchPod+":"+benchContainer, benchNode, certPEM, keyPEM, api.CA.CertPEM)
	_, portStr, _ := net.SplitHostPort(strings.TrimPrefix(backend.url, "https://"))
	port, err := strconv.Atoi(portStr)
	if err != nil {
		tb.Fatal(err)
	}
	if err := registerWorkload(ctx, api, port); err != nil {
		tb.Fatal(err)
	}
	admin := api.AdminConfig()
	e := &env{backend: backend, apiURL: api.URL, apiCA: api.CA.CertPEM, clientCert: admin.CertData, clientKey: admin.KeyData}
	e.init(tb, func(path string) {
		if err := api.WriteKubeconfig(path, admin); err != nil {
			tb.Fatal(err)
		}
	})
	return e
}

// registerWorkload creates the Node (reachable at 127.0.0.1:port, Ready)
// and the Pod (bound to it, Running) that nothing here reconciles.
func registerWorkload(ctx context.Context, api *kubeapi.Server, port int) error {
	cs := api.AdminClient()
	node, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: benchNode, Labels: map[string]string{"kubernetes.io/hostname": benchNode, "kubernetes.io/os": "linux"},
	}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating Node: %w", err)
	}
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: benchNode}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(port)}},
		Conditions:      []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting Node status: %w", err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	pod, err := cs.CoreV1().Pods(benchNamespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: benchPod},
		Spec: corev1.PodSpec{
			NodeName:   benchNode,
			Containers: []corev1.Container{{Name: benchContainer, Image: "registry.example/bench:1"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating Pod: %w", err)
	}
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: benchContainer, Ready: true, Image: "registry.example/bench:1", ImageID: "registry.example/bench@sha256:0",
			ContainerID: "local://" + benchPod, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
		HostIP: "127.0.0.1", StartTime: &now,
	}
	if _, err := cs.CoreV1().Pods(benchNamespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting Pod status: %w", err)
	}
	return nil
}
