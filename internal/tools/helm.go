package tools

import (
	"context"
	"fmt"
	"strings"
)

// The Helm releases the chart is tested with: the last v3 line operators still
// run (and Flux's helm-controller embeds) and the current v4.
const (
	HelmV3Version = "v3.22.0"
	HelmV4Version = "v4.3.1"
)

// HelmVersions lists every pinned Helm, for tests that run once per version.
var HelmVersions = []string{HelmV3Version, HelmV4Version}

// kubeMajorMinor splits KubernetesVersion ("1.37.2") into "1" and "37".
func kubeMajorMinor() (string, string) {
	parts := strings.SplitN(KubernetesVersion, ".", 3)
	return parts[0], parts[1]
}

func helmTool(version string) (goTool, error) {
	major, minor := kubeMajorMinor()
	switch version {
	case HelmV3Version:
		// Helm's Makefile sets these; a bare `go install` leaves the version
		// at "v3.22" and the default Kubernetes version of capabilities and
		// lint deprecation checks at 1.20.
		return helmBuild("v3", version,
			"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor="+major,
			"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor="+minor,
			"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor="+major,
			"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor="+minor,
		), nil
	case HelmV4Version:
		// v4 derives its default Kubernetes version from the client-go in its
		// build info (v0.37.x => 1.37); only the version string needs setting.
		return helmBuild("v4", version), nil
	}
	return goTool{}, fmt.Errorf("helm %s is not pinned (have %v)", version, HelmVersions)
}

// helmBuild is helm.sh/helm/<major>'s command stripped, with the version
// variables Helm's Makefile sets, then extra ldflags.
func helmBuild(major, version string, extra ...string) goTool {
	mod := "helm.sh/helm/" + major
	ld := append([]string{"-s", "-w",
		"-X " + mod + "/internal/version.version=" + version,
		"-X " + mod + "/internal/version.gitTreeState=clean",
	}, extra...)
	return goTool{name: "helm", pkg: mod + "/cmd/helm", version: version, ldflags: strings.Join(ld, " ")}
}

// Helm returns the path of the helm binary of a pinned version, building it
// with `go install helm.sh/helm/vN/cmd/helm@version` on first use (about 3-5
// minutes cold on 2 cores, cached under .cache/bin/helm-<version>/ after).
// Callers must still pass --kube-version KubernetesVersion to every render.
func Helm(ctx context.Context, version string) (string, error) {
	t, err := helmTool(version)
	if err != nil {
		return "", err
	}
	return t.ensure(ctx)
}
