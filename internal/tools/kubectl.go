package tools

import (
	"context"
	"path/filepath"
)

// kubectlBuild describes kubectl built from the same k8s.io/kubernetes
// release as kube-apiserver (KubernetesVersion), with the same version
// ldflags, so `kubectl version --client` reports that release.
func kubectlBuild() serverToolBuild {
	b := kubeAPIServerBuild()
	b.name = "kubectl"
	b.moduleDir = filepath.Join("internal", "tools", "build", "kubectl")
	b.pkg = "k8s.io/kubernetes/cmd/kubectl"
	return b
}

// Kubectl returns the path of a kubectl binary at KubernetesVersion, building
// it into the repository's .cache/bin on first use (a cold build takes a few
// minutes on two cores; callers should allow for that in their timeouts).
func Kubectl(ctx context.Context) (string, error) {
	return kubectlBuild().ensure(ctx)
}
