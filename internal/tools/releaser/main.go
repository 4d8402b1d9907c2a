// Command releaser is the daemonless half of the release: it builds the
// multi-arch image with go-containerregistry (no Docker engine), pins the
// chart to the image it built, and prints what a tag would publish. `make
// image`, `make release-dry` and .github/workflows/release.yml call it; the
// tests in tests/release run it against a real registry on loopback.
//
//	releaser image -version v0.2.0 -commit abc1234 -push REGISTRY/REPO:TAG [-digest-file F]
//	releaser image -version v0.2.0 -layout dist/oci
//	releaser pin-chart -chart chart -out DIR -image REGISTRY/REPO -tag v0.2.0 -digest sha256:...
//	releaser plan -tag v0.2.0
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const defaultPlatforms = "linux/amd64,linux/arm64"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "image":
		err = imageCmd(ctx, os.Args[2:])
	case "pin-chart":
		err = pinChartCmd(os.Args[2:])
	case "plan":
		err = planCmd(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "releaser:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: releaser image|pin-chart|plan [flags] (see -h of each)")
	os.Exit(2)
}

// createdTime honours SOURCE_DATE_EPOCH (reproducible-builds.org), else the
// Unix epoch: the image's digest then depends only on its contents.
func createdTime() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

func imageFlags(fs *flag.FlagSet) *imageOptions {
	o := &imageOptions{}
	fs.StringVar(&o.Version, "version", "dev", "version stamped into the binary and the image labels")
	fs.StringVar(&o.Commit, "commit", "unknown", "commit stamped into the binary and the image labels")
	fs.StringVar(&o.RepoRoot, "repo", ".", "repository root (where ./cmd/k8s-ws-proxy is)")
	fs.StringVar(&o.CABundle, "ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM CA bundle copied to /"+CABundle)
	return o
}

func imageCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("image", flag.ExitOnError)
	o := imageFlags(fs)
	platforms := fs.String("platforms", defaultPlatforms, "comma-separated platforms of the index")
	push := fs.String("push", "", "push the index to this reference (REGISTRY/REPO:TAG); loopback registries are spoken to over plain HTTP")
	layoutDir := fs.String("layout", "", "write the index into this OCI image layout directory instead of pushing")
	digestFile := fs.String("digest-file", "", "write the index digest (sha256:...) to this file")
	_ = fs.Parse(args)
	if (*push == "") == (*layoutDir == "") {
		return errors.New("image: exactly one of -push and -layout")
	}
	plats, err := parsePlatforms(*platforms)
	if err != nil {
		return err
	}
	o.Platforms = plats
	if o.Created, err = createdTime(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "releaser-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	o.WorkDir = tmp
	idx, err := buildIndex(ctx, *o)
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	if *push != "" {
		ref, err := name.ParseReference(*push, name.StrictValidation)
		if err != nil {
			return err
		}
		if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
		fmt.Printf("pushed %s@%s\n", ref.Context(), digest)
	} else {
		p, err := layout.FromPath(*layoutDir)
		if err != nil {
			if p, err = layout.Write(*layoutDir, empty.Index); err != nil {
				return err
			}
		}
		if err := p.ReplaceIndex(idx, match.Name(o.Version), layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": o.Version,
		})); err != nil {
			return err
		}
		abs, _ := filepath.Abs(*layoutDir)
		fmt.Printf("wrote %s (tag %s) to OCI layout %s\n", digest, o.Version, abs)
	}
	if *digestFile != "" {
		if err := os.WriteFile(*digestFile, []byte(digest.String()+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}
