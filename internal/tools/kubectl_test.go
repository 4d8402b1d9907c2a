package tools

import (
	"context"
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
	root, err := serverToolRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b := kubectlBuild()
	data, err := os.ReadFile(filepath.Join(root, b.moduleDir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "\ntool k8s.io/kubernetes/cmd/kubectl\n") {
		t.Errorf("%s/go.mod has no tool directive for k8s.io/kubernetes/cmd/kubectl", b.moduleDir)
	}
	if !goModRequires(data, "k8s.io/kubernetes v"+KubernetesVersion) {
		t.Errorf("%s/go.mod does not require k8s.io/kubernetes v%s", b.moduleDir, KubernetesVersion)
	}
	staging := "v0." + strings.SplitN(KubernetesVersion, ".", 2)[1]
	replaces := 0
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) == 4 && f[1] == "=>" {
			replaces++
			if f[0] != f[2] || f[3] != staging || !strings.HasPrefix(f[0], "k8s.io/") {
				t.Errorf("replace %q: want %s => %s %s", strings.TrimSpace(line), f[0], f[0], staging)
			}
		}
	}
	if replaces < 30 {
		t.Errorf("found %d staging replaces in %s/go.mod, want all of them (>= 30)", replaces, b.moduleDir)
	}
}

// TestKubectlVersion builds (or reuses) kubectl and checks that it reports
// the pinned release, i.e. that it was built from k8s.io/kubernetes at
// KubernetesVersion with the version ldflags in effect.
func TestKubectlVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()
	bin, err := Kubectl(ctx)
	if err != nil {
		t.Fatal(err)
	}
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
