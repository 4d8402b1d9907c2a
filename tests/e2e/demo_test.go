package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoSelfTest runs the README's demo the way a user would, but lets
// it drive one session itself: backend, proxy, token, `k8s-ws-proxy shell`.
func TestDemoSelfTest(t *testing.T) {
	demo := filepath.Join(t.TempDir(), "k8s-ws-proxy-demo")
	build := exec.Command("go", "build", "-o", demo, "github.com/k8s-ws-proxy/k8s-ws-proxy/cmd/k8s-ws-proxy-demo")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}
	out, err := exec.Command(demo, "--proxy-bin", proxyBin, "--listen", "127.0.0.1:0", "--self-test").CombinedOutput()
	if err != nil {
		t.Fatalf("demo self-test failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "self-test passed") {
		t.Fatalf("demo output lacks the pass line:\n%s", out)
	}
}
