package testenv

import (
	"encoding/base64"
	"fmt"
	"os"
	"testing"
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
	ca := ""
	if caPEM != nil {
		ca = "\n    certificate-authority-data: " + base64.StdEncoding.EncodeToString(caPEM)
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s%s
contexts:
- name: local
  context:
    cluster: local
    user: proxy
users:
- name: proxy
  user:
    token: local-backend-ignores-this
current-context: local
`, server, ca)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
}
