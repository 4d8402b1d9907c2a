package release

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

var pushDigestRE = regexp.MustCompile(`(?m)^Digest: (sha256:[0-9a-f]{64})$`)

// chart is the chart the release tests share: pinned to the pushed image's
// tag and digest the way release.yml does it, packaged, and pushed to the
// loopback registry as an OCI artifact once.
type chart struct {
	helm    string   // the pinned helm binary
	env     []string // helm's config, cache and registry files, kept apart
	version string   // the chart version (the tag without v)
	tgz     string   // the package helm pushed
	ref     string   // oci://127.0.0.1:PORT/charts/k8s-ws-proxy
	digest  string   // the manifest digest helm push printed
}

var chartPush struct {
	once sync.Once
	c    chart
	err  error
}

func pushedChart(t testing.TB) chart {
	t.Helper()
	img := pushedImage(t)
	reg := theRegistry(t)
	rel := releaser(t)
	chartPush.once.Do(func() { chartPush.c, chartPush.err = pushChart(t, rel, img, reg.Host) })
	if chartPush.err != nil {
		t.Fatal(chartPush.err)
	}
	return chartPush.c
}

func pushChart(t testing.TB, releaserBin string, img pushed, host string) (chart, error) {
	helm, err := tools.Helm(toolCtx(t), tools.HelmV3Version)
	if err != nil {
		return chart{}, err
	}
	work, err := os.MkdirTemp("", "release-chart-")
	if err != nil {
		return chart{}, err
	}
	cleanups = append(cleanups, func() { os.RemoveAll(work) })
	c := chart{helm: helm, version: strings.TrimPrefix(testTag, "v"), ref: "oci://" + host + "/charts/k8s-ws-proxy",
		tgz: filepath.Join(work, "k8s-ws-proxy-"+strings.TrimPrefix(testTag, "v")+".tgz")}
	for _, v := range []string{"CONFIG", "CACHE", "DATA"} {
		c.env = append(c.env, "HELM_"+v+"_HOME="+filepath.Join(work, strings.ToLower(v)))
	}
	c.env = append(c.env, "HELM_REGISTRY_CONFIG="+filepath.Join(work, "registry.json"))
	pinned := filepath.Join(work, "chart")
	var out string
	for _, s := range [][]string{
		{repoRoot(t), releaserBin, "pin-chart", "-chart", "chart", "-out", pinned, "-image", img.Repo, "-tag", testTag, "-digest", img.Digest},
		{work, helm, "package", pinned, "--version", c.version, "--app-version", testTag, "-d", work},
		{work, helm, "push", c.tgz, "oci://" + host + "/charts", "--plain-http"},
	} {
		if out, err = runErr(t, s[0], c.env, s[1], s[2:]...); err != nil {
			return chart{}, fmt.Errorf("%s %s: %w\n%s", filepath.Base(s[1]), strings.Join(s[2:], " "), err, out)
		}
	}
	m := pushDigestRE.FindStringSubmatch(out)
	if m == nil {
		return chart{}, fmt.Errorf("helm push printed no digest:\n%s", out)
	}
	c.digest = m[1]
	return c, nil
}

func TestChartAsOCIArtifact(t *testing.T) {
	img := pushedImage(t)
	reg := theRegistry(t)
	c := pushedChart(t)
	helm, env, work, version, tgz := c.helm, c.env, t.TempDir(), c.version, c.tgz

	// The registry holds a Helm chart artifact under that digest and tag.
	ref, err := name.ParseReference(reg.Host + "/charts/k8s-ws-proxy:" + version)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatalf("reading the chart back: %v", err)
	}
	if desc.Digest.String() != c.digest {
		t.Errorf("chart tag resolves to %s, helm pushed %s", desc.Digest, c.digest)
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
	run(t, work, env, helm, "pull", c.ref, "--version", version, "--plain-http", "-d", pullDir)
	pulled := mustRead(t, filepath.Join(pullDir, "k8s-ws-proxy-"+version+".tgz"))
	if local := mustRead(t, tgz); string(pulled) != string(local) {
		t.Errorf("pulled chart (%d bytes) differs from the pushed package (%d bytes)", len(pulled), len(local))
	}

	// Rendered straight from the registry with nothing but enabled=true.
	rendered := run(t, work, env, helm, "template", "k8s-ws-proxy", c.ref,
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
