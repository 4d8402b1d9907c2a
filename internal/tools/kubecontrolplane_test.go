package tools

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestKWOKModulePinned(t *testing.T) {
	toolGoMod(t, kwokBuild(), "sigs.k8s.io/kwok v"+KWOKVersion)
	// The control plane's three binaries come from one module graph.
	kas := toolGoMod(t, kubeAPIServerBuild())
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if b := kubeComponentBuild(name); b.moduleDir != kubeAPIServerBuild().moduleDir || !bytes.Contains(kas, []byte("\tk8s.io/kubernetes/cmd/"+name+"\n")) {
			t.Errorf("%s is not a tool of %s", name, kubeAPIServerBuild().moduleDir)
		}
	}
}

// The binaries report the pinned versions: the version ldflags took effect
// for the controller manager and scheduler as for the API server.
func TestControlPlaneVersions(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Minute)
	defer cancel()
	for _, c := range []struct {
		name  string
		build func(context.Context) (string, error)
		want  string
	}{
		{"kube-controller-manager", KubeControllerManager, "Kubernetes v" + KubernetesVersion},
		{"kube-scheduler", KubeScheduler, "Kubernetes v" + KubernetesVersion},
		{"kwok", KWOK, KWOKVersion},
	} {
		bin, err := c.build(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --version: %v\n%s", c.name, err, out)
		}
		if !strings.Contains(string(out), c.want) {
			t.Errorf("%s --version = %q, want %q in it", c.name, out, c.want)
		}
	}
	stages, err := KWOKStages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(stages, []byte("\nkind: Stage\n")); n != len(kwokStageFiles) {
		t.Errorf("KWOK stages hold %d Stage documents, want %d", n, len(kwokStageFiles))
	}
	if bytes.Contains(stages, []byte("name: pod-complete")) {
		t.Error("KWOK stages complete Job pods by themselves")
	}
}
