package tools

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// kubeComponentBuild is kube-apiserver's build for another main package of
// the same k8s.io/kubernetes module: the same tools module (one module graph
// for the whole control plane, so the three never disagree on a dependency),
// the same version ldflags, its own cached binary.
func kubeComponentBuild(name string) serverToolBuild {
	b := kubeAPIServerBuild()
	b.name = name
	b.pkg = "k8s.io/kubernetes/cmd/" + name
	return b
}

// KubeControllerManager returns the path of a kube-controller-manager at
// KubernetesVersion, built into .cache/bin on first use, with the rest of the
// control plane (see controlPlane).
func KubeControllerManager(ctx context.Context) (string, error) {
	return controlPlane(ctx, 1)
}

// KubeScheduler returns the path of a kube-scheduler at KubernetesVersion,
// built into .cache/bin on first use, with the rest of the control plane.
func KubeScheduler(ctx context.Context) (string, error) {
	return controlPlane(ctx, 2)
}

// controlPlane ensures kube-apiserver, kube-controller-manager and
// kube-scheduler with one go build and returns the i-th: their packages are
// mostly the same, so building them together costs little more than
// kube-apiserver alone, and two suites that need different ones at the same
// time no longer compile k8s.io/kubernetes twice side by side.
func controlPlane(ctx context.Context, i int) (string, error) {
	paths, err := ensureTogether(ctx, kubeAPIServerBuild(),
		kubeComponentBuild("kube-controller-manager"), kubeComponentBuild("kube-scheduler"))
	if err != nil {
		return "", err
	}
	return paths[i], nil
}

// KWOKVersion is the KWOK (Kubernetes WithOut Kubelet) release that plays the
// kubelet of fake nodes in the control-plane tests.
const KWOKVersion = "0.8.0"

func kwokBuild() serverToolBuild {
	return strippedBuild("kwok", "kwok", "sigs.k8s.io/kwok", "v"+KWOKVersion, "sigs.k8s.io/kwok/cmd/kwok")
}

// KWOK returns the path of the kwok controller binary at KWOKVersion, built
// from its own tools module into .cache/bin on first use.
func KWOK(ctx context.Context) (string, error) {
	return kwokBuild().ensure(ctx)
}

// kwokStageFiles are upstream's stages for fast nodes and pods, read from the
// pinned module so they always match the binary. Left out on purpose:
// pod-complete, which would mark a Job's pod Succeeded without running
// anything; the harness runs a Job's command itself and reports its exit.
var kwokStageFiles = []string{
	"kustomize/stage/node/fast/node-initialize.yaml",
	"kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
	"kustomize/stage/pod/fast/pod-ready.yaml",
	"kustomize/stage/pod/fast/pod-delete.yaml",
}

// KWOKStages returns KWOK's stage configuration (a multi-document YAML for
// kwok --config): nodes become Ready and keep their lease, pods on them
// become Running, deleted pods go away.
func KWOKStages(ctx context.Context) ([]byte, error) {
	root, err := serverToolRepoRoot()
	if err != nil {
		return nil, err
	}
	b := kwokBuild()
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok")
	cmd.Dir = filepath.Join(root, b.moduleDir)
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOTOOLCHAIN=local", "GOFLAGS=-mod=readonly")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return nil, fmt.Errorf("locating sigs.k8s.io/kwok v%s: %w\n%s", KWOKVersion, err, stderr)
	}
	dir := strings.TrimSpace(string(out))
	var all []byte
	for _, f := range kwokStageFiles {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, fmt.Errorf("KWOK stage: %w", err)
		}
		all = append(append(all, "---\n"...), data...)
	}
	return all, nil
}
