package release

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

var pushDigestRE = regexp.MustCompile(`(?m)^Digest: (sha256:[0-9a-f]{64})$`)

// The chart, pinned to the pushed image's tag and digest the way release.yml
// does it, goes to the same registry as an OCI artifact; pulled and rendered
// from oci:// it runs exactly that image by digest, hook included.
func TestChartAsOCIArtifact(t *testing.T) {
	img := pushedImage(t)
	reg := theRegistry(t)
	helm, err := tools.Helm(toolCtx(t), tools.HelmV3Version)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	// helm keeps registry config and caches under these; keep them here.
	env := []string{
		"HELM_CONFIG_HOME=" + filepath.Join(work, "config"),
		"HELM_CACHE_HOME=" + filepath.Join(work, "cache"),
		"HELM_DATA_HOME=" + filepath.Join(work, "data"),
		"HELM_REGISTRY_CONFIG=" + filepath.Join(work, "registry.json"),
	}
	version := strings.TrimPrefix(testTag, "v")
	pinned := filepath.Join(work, "chart")
	run(t, repoRoot(t), nil, releaser(t), "pin-chart", "-chart", "chart", "-out", pinned,
		"-image", img.Repo, "-tag", testTag, "-digest", img.Digest)
	run(t, work, env, helm, "package", pinned, "--version", version, "--app-version", testTag, "-d", work)
	tgz := filepath.Join(work, "k8s-ws-proxy-"+version+".tgz")
	out := run(t, work, env, helm, "push", tgz, "oci://"+reg.Host+"/charts", "--plain-http")
	m := pushDigestRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("helm push printed no digest:\n%s", out)
	}
	t.Logf("helm push:\n%s", out)

	// The registry holds a Helm chart artifact under that digest and tag.
	ref, err := name.ParseReference(reg.Host + "/charts/k8s-ws-proxy:" + version)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatalf("reading the chart back: %v", err)
	}
	if desc.Digest.String() != m[1] {
		t.Errorf("chart tag resolves to %s, helm pushed %s", desc.Digest, m[1])
	}
	chartImg, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	man, err := chartImg.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if man.Config.MediaType != "application/vnd.cncf.helm.config.v1+json" || len(man.Layers) != 1 ||
		man.Layers[0].MediaType != "application/vnd.cncf.helm.chart.content.v1.tar+gzip" {
		t.Errorf("chart artifact config %s, layers %+v: not a Helm chart", man.Config.MediaType, man.Layers)
	}

	pullDir := filepath.Join(work, "pulled")
	if err := os.Mkdir(pullDir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, work, env, helm, "pull", "oci://"+reg.Host+"/charts/k8s-ws-proxy", "--version", version, "--plain-http", "-d", pullDir)
	pulled := mustRead(t, filepath.Join(pullDir, "k8s-ws-proxy-"+version+".tgz"))
	if local := mustRead(t, tgz); string(pulled) != string(local) {
		t.Errorf("pulled chart (%d bytes) differs from the pushed package (%d bytes)", len(pulled), len(local))
	}

	// Rendered straight from the registry with nothing but enabled=true.
	rendered := run(t, work, env, helm, "template", "k8s-ws-proxy", "oci://"+reg.Host+"/charts/k8s-ws-proxy",
		"--version", version, "--plain-http", "--namespace", "guacamole", "--set", "enabled=true",
		"--kube-version", tools.KubernetesVersion)
	want := `image: "` + img.Repo + ":" + testTag + "@" + img.Digest + `"`
	if n := strings.Count(rendered, want); n < 2 {
		t.Errorf("rendered chart names the pinned image %d times, want the DaemonSet and the bootstrap hook:\n%s", n, grepLines(rendered, "image:"))
	}
	if strings.Contains(rendered, "ghcr.io/k8s-ws-proxy") {
		t.Errorf("rendered chart still names the unpinned default image:\n%s", grepLines(rendered, "image:"))
	}
	if err := os.WriteFile(filepath.Join(work, "rendered.yaml"), []byte(rendered), 0o644); err != nil {
		t.Fatal(err)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
