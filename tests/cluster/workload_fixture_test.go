package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/localexec"
)

// The workload the exec tests reach: one Pod on one Node whose kubelet is a
// localexec server, so "containers" are real local processes started by
// the upstream kubelet streaming code.
const (
	workloadNamespace = "apps"
	workloadPod       = "web-0"
	workloadContainer = "shell"
	workloadNode      = "node-e2e"
)

// fakeKubelet is the node's kubelet endpoint: localexec's kubelet-shaped
// /exec and /attach paths over TLS, with a serving certificate from the API
// server's --kubelet-certificate-authority, accepting only client
// certificates from the cluster CA, which issued the API server's
// --kubelet-client-certificate.
type fakeKubelet struct {
	port    int
	backend *localexec.Server

	mu      sync.Mutex
	clients map[string]int // client certificate CN -> requests
}

func (k *fakeKubelet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		k.mu.Lock()
		k.clients[r.TLS.PeerCertificates[0].Subject.CommonName]++
		k.mu.Unlock()
	}
	k.backend.ServeHTTP(w, r)
}

// requests returns how many requests each client identity made.
func (k *fakeKubelet) requests() map[string]int {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]int{}
	for cn, n := range k.clients {
		out[cn] = n
	}
	return out
}

var (
	workloadOnce sync.Once
	kubelet      *fakeKubelet
	workloadErr  error
)

// workload starts the fake kubelet and registers its Node and the Pod with
// the API server, once per run; TestMain stops the kubelet after all tests.
func workload(t testing.TB) *fakeKubelet {
	t.Helper()
	workloadOnce.Do(func() { kubelet, workloadErr = startWorkload() })
	if workloadErr != nil {
		t.Fatal(workloadErr)
	}
	return kubelet
}

func startWorkload() (*fakeKubelet, error) {
	backend, err := localexec.NewServer(localexec.Config{
		Pods: []localexec.Pod{{
			Namespace: workloadNamespace, Name: workloadPod, NodeName: workloadNode,
			Containers: []localexec.Container{{Name: workloadContainer}},
		}},
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	cert, err := api.KubeletServingCert(workloadNode, net.IPv4(127, 0, 0, 1))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	k := &fakeKubelet{port: ln.Addr().(*net.TCPAddr).Port, backend: backend, clients: map[string]int{}}
	hs := &http.Server{
		Handler: k,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    api.CA.Pool(),
			// Exec upgrades are HTTP/1.1 (SPDY and WebSocket alike).
			NextProtos: []string{"http/1.1"},
			MinVersion: tls.VersionTLS12,
		},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(slog.NewJSONHandler(io.Discard, nil), slog.LevelWarn),
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.ServeTLS(ln, "", "")
	}()
	atTeardown(func() {
		// The listener first, then the backend: Close waits for the exec
		// handlers (net/http does not track upgraded connections), which
		// the goleak check at the end of TestMain relies on.
		_ = hs.Close()
		<-served
		if err := backend.Close(); err != nil {
			slog.Error("fake kubelet", "error", err)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := api.AdminClient()
	// The Node as a kubelet would register it: reachable at 127.0.0.1 on
	// the fake kubelet's port, Ready.
	node, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   workloadNode,
		Labels: map[string]string{"kubernetes.io/hostname": workloadNode, "kubernetes.io/os": "linux"},
	}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating Node: %w", err)
	}
	node.Status = corev1.NodeStatus{
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: workloadNode}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(k.port)}},
		Conditions:      []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return nil, fmt.Errorf("setting Node status: %w", err)
	}

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workloadNamespace}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	// The Pod as the scheduler and kubelet would leave it: bound to the
	// node, Running, its container started.
	pod, err := cs.CoreV1().Pods(workloadNamespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: workloadPod},
		Spec: corev1.PodSpec{
			NodeName:   workloadNode,
			Containers: []corev1.Container{{Name: workloadContainer, Image: "registry.example/shell:1"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating Pod: %w", err)
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: workloadContainer, Ready: true, Image: "registry.example/shell:1", ImageID: "registry.example/shell@sha256:0",
			ContainerID: "local://" + workloadPod, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
		HostIP:    "127.0.0.1",
		StartTime: &now,
	}
	if _, err := cs.CoreV1().Pods(workloadNamespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		return nil, fmt.Errorf("setting Pod status: %w", err)
	}
	return k, nil
}
