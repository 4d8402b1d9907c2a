package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// releaseTagRE is the tag shape release.yml triggers on: v + semver.
var releaseTagRE = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

func planCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("plan", flag.ExitOnError)
	o := imageFlags(fs)
	tag := fs.String("tag", "", "the release tag, e.g. v0.2.0")
	image := fs.String("image", "ghcr.io/k8s-ws-proxy/k8s-ws-proxy", "image repository the workflow pushes to")
	chartRepo := fs.String("chart-repo", "oci://ghcr.io/k8s-ws-proxy/charts", "OCI repository the chart is pushed to")
	slug := fs.String("github-repo", "k8s-ws-proxy/k8s-ws-proxy", "owner/name of the repository the workflow runs in (the signing identity)")
	build := fs.Bool("build", true, "build the index here to show its digest and per-platform sizes")
	platforms := fs.String("platforms", defaultPlatforms, "comma-separated platforms of the index")
	_ = fs.Parse(args)
	return plan(ctx, os.Stdout, *o, planInput{
		Tag: *tag, Image: *image, ChartRepo: *chartRepo, Slug: *slug, Build: *build, Platforms: *platforms,
	})
}

type planInput struct {
	Tag, Image, ChartRepo, Slug, Platforms string
	Build                                  bool
}

func plan(ctx context.Context, w io.Writer, o imageOptions, in planInput) error {
	if !releaseTagRE.MatchString(in.Tag) {
		return fmt.Errorf("tag %q is not a release tag (vMAJOR.MINOR.PATCH[-PRE]); release.yml would not run", in.Tag)
	}
	plats, err := parsePlatforms(in.Platforms)
	if err != nil {
		return err
	}
	chartName, _, err := chartMeta(o.RepoRoot + "/chart")
	if err != nil {
		return err
	}
	chartVersion := strings.TrimPrefix(in.Tag, "v")
	o.Version, o.Platforms = in.Tag, plats
	if o.Created, err = createdTime(); err != nil {
		return err
	}

	fmt.Fprintf(w, "tag %s would publish (release.yml; nothing is pushed by this dry run):\n\n", in.Tag)
	fmt.Fprintf(w, "image     %s:%s  (OCI image index, built without a Docker engine)\n", in.Image, in.Tag)
	digest := "<digest of the index the workflow builds>"
	if in.Build {
		tmp, err := os.MkdirTemp("", "releaser-plan-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		o.WorkDir = tmp
		idx, err := buildIndex(ctx, o)
		if err != nil {
			return err
		}
		d, err := idx.Digest()
		if err != nil {
			return err
		}
		digest = d.String()
		fmt.Fprintf(w, "          index %s (as built here from commit %s; the workflow's Go may differ)\n", digest, o.Commit)
		m, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		for _, desc := range m.Manifests {
			img, err := idx.Image(desc.Digest)
			if err != nil {
				return err
			}
			size, err := imageSize(img)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "          %-12s %s  %.1f MiB compressed\n", desc.Platform.String(), desc.Digest, float64(size)/(1<<20))
		}
	} else {
		for _, p := range plats {
			fmt.Fprintf(w, "          %s\n", p.String())
		}
	}
	fmt.Fprintf(w, "          user 65532:65532, entrypoint [/k8s-ws-proxy], cmd [serve]\n")
	identity := fmt.Sprintf("https://github.com/%s/.github/workflows/release.yml@refs/tags/%s", in.Slug, in.Tag)
	fmt.Fprintf(w, "sbom      CycloneDX JSON (cyclonedx-gomod), as a signed in-toto attestation on %s@%s\n", in.Image, digest)
	fmt.Fprintf(w, "signature cosign keyless (Fulcio certificate, Rekor entry) on %s@%s\n", in.Image, digest)
	fmt.Fprintf(w, "          identity %s\n", identity)
	fmt.Fprintf(w, "          issuer   https://token.actions.githubusercontent.com\n")
	fmt.Fprintf(w, "chart     %s/%s:%s  (appVersion %s, image pinned to %s:%s@%s)\n", in.ChartRepo, chartName, chartVersion, in.Tag, in.Image, in.Tag, digest)
	fmt.Fprintf(w, "          signed keylessly with the same identity\n")
	fmt.Fprintf(w, "\nverify:   cosign verify %s:%s --certificate-identity %s --certificate-oidc-issuer https://token.actions.githubusercontent.com\n", in.Image, in.Tag, identity)
	return nil
}

// imageSize is what a node pulls for one platform: manifest, config and
// compressed layers.
func imageSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	total := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	return total, nil
}
