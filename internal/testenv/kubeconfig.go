package testenv

import (
	"testing"

	"k8s.io/client-go/rest"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeconfig"
)

// WriteKubeconfig writes a kubeconfig that points at server with a fixed
// bearer token, for backends that do not authenticate (the local exec
// backend).
func WriteKubeconfig(tb testing.TB, path, server string) {
	tb.Helper()
	WriteKubeconfigCA(tb, path, server, nil)
}

// WriteKubeconfigCA is WriteKubeconfig for an https server whose
// certificate caPEM signs.
func WriteKubeconfigCA(tb testing.TB, path, server string, caPEM []byte) {
	tb.Helper()
	cfg := &rest.Config{Host: server, BearerToken: "local-backend-ignores-this", TLSClientConfig: rest.TLSClientConfig{CAData: caPEM}}
	if err := kubeconfig.Write(path, cfg); err != nil {
		tb.Fatal(err)
	}
}
