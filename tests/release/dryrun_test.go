package release

import (
	"regexp"
	"strings"
	"testing"
)

// `make release-dry` prints what a tag would publish, with the digest of the
// index built here, and the chart pinned to that same digest.
func TestMakeReleaseDry(t *testing.T) {
	out := run(t, repoRoot(t), nil, "make", "-s", "release-dry", "TAG=v1.2.3", "COMMIT=c0ffee1")
	t.Logf("make release-dry TAG=v1.2.3:\n%s", out)
	for _, want := range []string{
		"tag v1.2.3 would publish",
		"image     ghcr.io/k8s-ws-proxy/k8s-ws-proxy:v1.2.3",
		"linux/amd64", "linux/arm64",
		"user 65532:65532",
		"oci://ghcr.io/k8s-ws-proxy/charts/k8s-ws-proxy:1.2.3",
		"identity https://github.com/k8s-ws-proxy/k8s-ws-proxy/.github/workflows/release.yml@refs/tags/v1.2.3",
		"CycloneDX",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("release-dry output lacks %q", want)
		}
	}
	idx := regexp.MustCompile(`index (sha256:[0-9a-f]{64})`).FindStringSubmatch(out)
	if idx == nil {
		t.Fatal("release-dry printed no index digest")
	}
	if !strings.Contains(out, "image pinned to ghcr.io/k8s-ws-proxy/k8s-ws-proxy:v1.2.3@"+idx[1]) {
		t.Errorf("the chart is not pinned to the index digest %s", idx[1])
	}
	if n := len(regexp.MustCompile(`linux/(amd64|arm64) +sha256:[0-9a-f]{64} +[0-9.]+ MiB`).FindAllString(out, -1)); n != 2 {
		t.Errorf("want a digest and a size for each of the 2 platforms, found %d", n)
	}

	// A tag release.yml would not run on is refused, with the reason.
	bad, err := runErr(t, repoRoot(t), nil, "make", "-s", "release-dry", "TAG=1.2", "RELEASE_DRY_BUILD=false")
	if err == nil || !strings.Contains(bad, `tag "1.2" is not a release tag`) {
		t.Errorf("release-dry TAG=1.2: %v\n%s", err, bad)
	}
}
