package tools

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKubectlModulePinned keeps kubectl's tools module on the release
// kube-apiserver is built from: k8s.io/kubernetes at KubernetesVersion and
// every staging module at its v0.x twin.
func TestKubectlModulePinned(t *testing.T) {
	b := kubectlBuild()
	data := toolGoMod(t, b, "k8s.io/kubernetes v"+KubernetesVersion)
	if !strings.Contains(string(data), "\ntool k8s.io/kubernetes/cmd/kubectl\n") {
		t.Errorf("%s/go.mod has no tool directive for k8s.io/kubernetes/cmd/kubectl", b.moduleDir)
	}
	checkStagingPinned(t, data, b.moduleDir)
}

// TestKubectlVersion builds (or reuses) kubectl and checks that it reports
// the pinned release, i.e. that it was built from k8s.io/kubernetes at
// KubernetesVersion with the version ldflags in effect.
func TestKubectlVersion(t *testing.T) {
	ctx, bin := builtTool(t, 30*time.Minute, Kubectl)
	cmd := exec.CommandContext(ctx, bin, "version", "--client", "-o", "json")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "none"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s version --client: %v\n%s", bin, err, out)
	}
	var v struct {
		ClientVersion struct{ GitVersion, Major, Minor string }
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("kubectl version output %q: %v", out, err)
	}
	if got, want := v.ClientVersion.GitVersion, "v"+KubernetesVersion; got != want {
		t.Errorf("kubectl client gitVersion = %q, want %q", got, want)
	}
}
