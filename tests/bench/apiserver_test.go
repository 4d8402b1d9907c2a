package bench

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

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
	if err := kubeapi.CreateWorkload(ctx, api.AdminClient(), kubeapi.Workload{
		Node: benchNode, Namespace: benchNamespace, Pod: benchPod, Container: benchContainer,
		KubeletPort: port, Image: "registry.example/bench",
	}); err != nil {
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
