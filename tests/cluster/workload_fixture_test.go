package cluster

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeapi"
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
	if err := kubeapi.CreateWorkload(ctx, api.AdminClient(), kubeapi.Workload{
		Node: workloadNode, Namespace: workloadNamespace, Pod: workloadPod, Container: workloadContainer,
		KubeletPort: k.port, Image: "registry.example/shell",
	}); err != nil {
		return nil, err
	}
	return k, nil
}
