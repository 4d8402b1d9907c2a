package release

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var pinnedImage = regexp.MustCompile(`^[a-z0-9.-]+(:[0-9]+)?/[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$`)

// unpinnedBases returns every FROM image of a Dockerfile that is not
// host/name:tag@sha256:<digest>; stage names (FROM build) are not images.
func unpinnedBases(dockerfile string) []string {
	stages := map[string]bool{}
	var bad []string
	for _, line := range strings.Split(dockerfile, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.EqualFold(f[0], "FROM") {
			continue
		}
		var image string
		for _, w := range f[1:] {
			if !strings.HasPrefix(w, "--") {
				image = w
				break
			}
		}
		if len(f) >= 4 && strings.EqualFold(f[len(f)-2], "AS") {
			defer func(s string) { stages[s] = true }(f[len(f)-1])
		}
		if stages[image] {
			continue
		}
		if !pinnedImage.MatchString(image) {
			bad = append(bad, image)
		}
	}
	return bad
}

// Every base image of the Dockerfile is pinned by digest, next to the tag
// that says what it is.
func TestDockerfileBasesPinnedByDigest(t *testing.T) {
	df := string(mustRead(t, filepath.Join(repoRoot(t), "Dockerfile")))
	if bad := unpinnedBases(df); len(bad) > 0 {
		t.Errorf("Dockerfile base images without a digest pin: %v", bad)
	}
	if n := strings.Count(df, "\nFROM "); n < 2 {
		t.Fatalf("found %d FROM lines", n)
	}
	// Negative control: the pre-pin Dockerfile's bases are reported.
	old := "FROM --platform=$BUILDPLATFORM docker.io/library/golang:1.26-bookworm AS build\nFROM gcr.io/distroless/static-debian12:nonroot\n"
	if got := fmt.Sprint(unpinnedBases(old)); got != "[docker.io/library/golang:1.26-bookworm gcr.io/distroless/static-debian12:nonroot]" {
		t.Errorf("unpinned bases not reported: %s", got)
	}
}
