package testenv

import (
	"fmt"
	"os"
	"testing"
)

// WriteKubeconfig writes a kubeconfig that points at server with a fixed
// bearer token, for backends that do not authenticate (the local exec
// backend).
func WriteKubeconfig(tb testing.TB, path, server string) {
	tb.Helper()
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s
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
`, server)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
}
