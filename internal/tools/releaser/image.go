package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image layout, the same as the Dockerfile's final stage on
// gcr.io/distroless/static-debian12:nonroot as far as a static Go binary can
// tell: root and nonroot (65532) users, a CA bundle, a world-writable /tmp
// and nonroot's home, and the binary. Nothing else: no shell, no libc, no
// package database.
const (
	NonrootUID  = 65532
	BinaryPath  = "k8s-ws-proxy"
	CABundle    = "etc/ssl/certs/ca-certificates.crt"
	imageSource = "https://github.com/k8s-ws-proxy/k8s-ws-proxy"
)

// The same users and groups distroless ships (root, nobody, nonroot), so
// runAsNonRoot and `id` inside an ephemeral debug container agree with the
// Dockerfile image.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\ntty:x:5:\nstaff:x:50:\n"
)

type imageOptions struct {
	Platforms []v1.Platform
	Version   string
	Commit    string
	RepoRoot  string
	CABundle  string    // host path of the CA bundle copied into the image
	Created   time.Time // every timestamp in the image: reproducible digests
	WorkDir   string    // where per-platform binaries are built
}

// goBuild compiles ./cmd/k8s-ws-proxy for one platform with exactly the
// Dockerfile's flags (chart/tests checks the Dockerfile's line; tests/release
// checks this one produces the same kind of binary).
func goBuild(ctx context.Context, o imageOptions, p v1.Platform) (string, error) {
	out := filepath.Join(o.WorkDir, p.OS+"-"+p.Architecture, BinaryPath)
	ld := fmt.Sprintf("-s -w -X main.version=%s -X main.commit=%s", o.Version, o.Commit)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ld, "-o", out, "./cmd/k8s-ws-proxy")
	cmd.Dir = o.RepoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture, "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build for %s/%s: %w\n%s", p.OS, p.Architecture, err, b)
	}
	return out, nil
}

type tarEntry struct {
	name string
	mode int64
	uid  int
	body []byte // nil for a directory
}

// rootfs returns the single layer's entries, parents before children.
func rootfs(binary, caBundle []byte) []tarEntry {
	return []tarEntry{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: CABundle, mode: 0o644, body: caBundle},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: NonrootUID},
		{name: "tmp/", mode: 0o1777},
		{name: BinaryPath, mode: 0o755, body: binary},
	}
}

func layerTar(entries []tarEntry, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid,
			ModTime: mtime, Format: tar.FormatPAX,
		}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// platformImage assembles one platform's image from scratch.
func platformImage(o imageOptions, p v1.Platform, binary, caBundle []byte) (v1.Image, error) {
	raw, err := layerTar(rootfs(binary, caBundle), o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer),
	)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "k8s-ws-proxy releaser: static binary on a distroless-equivalent root", Comment: "daemonless build"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: o.Created}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", NonrootUID, NonrootUID),
		Entrypoint: []string{"/" + BinaryPath},
		Cmd:        []string{"serve"},
		WorkingDir: "/",
		Env: []string{
			"PATH=/usr/local/bin:/usr/bin:/bin",
			"SSL_CERT_FILE=/" + CABundle,
		},
		Labels: ociLabels(o),
	}
	return mutate.ConfigFile(img, cf)
}

func ociLabels(o imageOptions) map[string]string {
	return map[string]string{
		"org.opencontainers.image.source":   imageSource,
		"org.opencontainers.image.version":  o.Version,
		"org.opencontainers.image.revision": o.Commit,
		"org.opencontainers.image.licenses": "Apache-2.0",
		"org.opencontainers.image.title":    "k8s-ws-proxy",
	}
}

// buildIndex builds every platform and returns the multi-arch OCI index.
func buildIndex(ctx context.Context, o imageOptions) (v1.ImageIndex, error) {
	ca, err := os.ReadFile(o.CABundle)
	if err != nil {
		return nil, fmt.Errorf("CA bundle for the image: %w (install Debian's ca-certificates or pass -ca-bundle)", err)
	}
	if !bytes.Contains(ca, []byte("BEGIN CERTIFICATE")) {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", o.CABundle)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var adds []mutate.IndexAddendum
	for _, p := range o.Platforms {
		bin, err := goBuild(ctx, o, p)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return nil, err
		}
		img, err := platformImage(o, p, data, ca)
		if err != nil {
			return nil, err
		}
		plat := p
		adds = append(adds, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: &plat},
		})
	}
	idx = mutate.AppendManifests(idx, adds...)
	return mutate.Annotations(idx, map[string]string{
		"org.opencontainers.image.source":   imageSource,
		"org.opencontainers.image.version":  o.Version,
		"org.opencontainers.image.revision": o.Commit,
		"org.opencontainers.image.created":  o.Created.UTC().Format(time.RFC3339),
	}).(v1.ImageIndex), nil
}

func parsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, f := range strings.Split(s, ",") {
		p, err := v1.ParsePlatform(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if p.OS != "linux" {
			return nil, fmt.Errorf("platform %s: only linux images are built", f)
		}
		out = append(out, *p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no platforms")
	}
	return out, nil
}
