package release

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fileSpec is what a path in the image must be.
type fileSpec struct {
	typ  byte
	mode int64
	uid  int
}

// wantFiles is the whole image: anything else in a layer is a failure. The
// same set as gcr.io/distroless/static-debian12:nonroot minus what a static
// Go binary never reads (tzdata, os-release, the dpkg status files).
var wantFiles = map[string]fileSpec{
	"etc/":                              {tar.TypeDir, 0o755, 0},
	"etc/group":                         {tar.TypeReg, 0o644, 0},
	"etc/passwd":                        {tar.TypeReg, 0o644, 0},
	"etc/ssl/":                          {tar.TypeDir, 0o755, 0},
	"etc/ssl/certs/":                    {tar.TypeDir, 0o755, 0},
	"etc/ssl/certs/ca-certificates.crt": {tar.TypeReg, 0o644, 0},
	"home/":                             {tar.TypeDir, 0o755, 0},
	"home/nonroot/":                     {tar.TypeDir, 0o700, 65532},
	"tmp/":                              {tar.TypeDir, 0o1777, 0},
	"k8s-ws-proxy":                      {tar.TypeReg, 0o755, 0},
}

var wantMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// imageFacts is what checkImage read out of one platform's image.
type imageFacts struct {
	Platform   string
	Binary     []byte
	Passwd     string
	Compressed int64 // what a node pulls: manifest, config, layers
}

// checkImage verifies one platform image against the release contract and
// returns every violation, so a negative control can see each one reported.
func checkImage(img v1.Image, plat v1.Platform) (imageFacts, []error) {
	facts := imageFacts{Platform: plat.String()}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	mt, err := img.MediaType()
	if err != nil {
		return facts, []error{err}
	}
	if mt != types.OCIManifestSchema1 {
		bad("manifest media type %s, want %s", mt, types.OCIManifestSchema1)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return facts, []error{err}
	}
	if cf.OS != plat.OS || cf.Architecture != plat.Architecture {
		bad("config says %s/%s, index says %s", cf.OS, cf.Architecture, plat)
	}
	if cf.Config.User != "65532:65532" {
		bad("user %q, want 65532:65532 (distroless nonroot, numeric for runAsNonRoot)", cf.Config.User)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/k8s-ws-proxy"}) {
		bad("entrypoint %q, want [/k8s-ws-proxy]", cf.Config.Entrypoint)
	}
	if !slices.Equal(cf.Config.Cmd, []string{"serve"}) {
		bad("cmd %q, want [serve]", cf.Config.Cmd)
	}
	if size, err := img.Size(); err == nil {
		facts.Compressed += size
	}
	m, err := img.Manifest()
	if err != nil {
		return facts, append(errs, err)
	}
	facts.Compressed += m.Config.Size
	for _, l := range m.Layers {
		facts.Compressed += l.Size
	}

	seen := map[string]bool{}
	layers, err := img.Layers()
	if err != nil {
		return facts, append(errs, err)
	}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return facts, append(errs, err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rc.Close()
				return facts, append(errs, fmt.Errorf("layer %d: %w", i, err))
			}
			n := strings.TrimPrefix(h.Name, "./")
			want, ok := wantFiles[n]
			switch {
			case !ok:
				bad("layer %d holds %s, which the image must not have", i, n)
				continue
			case seen[n]:
				bad("%s appears twice", n)
			case h.Typeflag != want.typ || h.Mode != want.mode || h.Uid != want.uid || h.Gid != want.uid:
				bad("%s: type %c mode %o uid %d gid %d, want type %c mode %o uid/gid %d",
					n, h.Typeflag, h.Mode, h.Uid, h.Gid, want.typ, want.mode, want.uid)
			}
			seen[n] = true
			data, err := io.ReadAll(tr)
			if err != nil {
				rc.Close()
				return facts, append(errs, err)
			}
			switch n {
			case "k8s-ws-proxy":
				facts.Binary = data
			case "etc/passwd":
				facts.Passwd = string(data)
			}
		}
		rc.Close()
	}
	for n := range wantFiles {
		if !seen[n] {
			bad("image lacks %s", n)
		}
	}
	if !strings.Contains(facts.Passwd, "nonroot:x:65532:65532:") {
		bad("/etc/passwd has no nonroot user 65532: %q", facts.Passwd)
	}
	if facts.Binary != nil {
		if err := checkELF(facts.Binary, plat.Architecture); err != nil {
			bad("/k8s-ws-proxy: %v", err)
		}
	}
	return facts, errs
}

// checkELF: a static Linux executable for arch, with no dynamic loader.
func checkELF(bin []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("not an ELF file: %w", err)
	}
	defer f.Close()
	want, ok := wantMachine[arch]
	if !ok {
		return fmt.Errorf("no expected ELF machine for %s", arch)
	}
	if f.Machine != want {
		return fmt.Errorf("ELF machine %v, want %v for %s", f.Machine, want, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return fmt.Errorf("has a %v program header: dynamically linked", p.Type)
		}
	}
	if f.Type != elf.ET_EXEC {
		return fmt.Errorf("ELF type %v, want a static ET_EXEC", f.Type)
	}
	return nil
}

func remoteIndex(t *testing.T, refStr string) v1.ImageIndex {
	t.Helper()
	ref, err := name.ParseReference(refStr)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref)
	if err != nil {
		t.Fatalf("reading %s back from the registry: %v", ref, err)
	}
	return idx
}

// The pushed tag is one OCI index of exactly linux/amd64 and linux/arm64,
// each a nonroot distroless-equivalent image of nothing but the binary and
// the files it needs, with a binary of the right architecture.
func TestImageIndex(t *testing.T) {
	img := pushedImage(t)
	idx := remoteIndex(t, img.Ref)
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != img.Digest {
		t.Fatalf("tag %s resolves to %s, releaser reported %s", img.Ref, d, img.Digest)
	}
	mt, _ := idx.MediaType()
	if mt != types.OCIImageIndex {
		t.Errorf("index media type %s, want %s", mt, types.OCIImageIndex)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var plats []string
	for _, desc := range im.Manifests {
		if desc.Platform == nil {
			t.Fatalf("index entry %s has no platform", desc.Digest)
		}
		plats = append(plats, desc.Platform.String())
		pi, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		facts, errs := checkImage(pi, *desc.Platform)
		for _, e := range errs {
			t.Errorf("%s: %v", desc.Platform, e)
		}
		t.Logf("%s: manifest %s, %d bytes pulled (binary %d bytes)", desc.Platform, desc.Digest, facts.Compressed, len(facts.Binary))
		// The host can run its own platform's binary: it is the proxy.
		if desc.Platform.Architecture == runtime.GOARCH && facts.Binary != nil {
			p := filepath.Join(t.TempDir(), "k8s-ws-proxy")
			if err := os.WriteFile(p, facts.Binary, 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(p, "version").CombinedOutput()
			if err != nil || !strings.Contains(string(out), testTag) || !strings.Contains(string(out), "c0ffee1") {
				t.Errorf("%s binary: `version` printed %q, %v; want %s and c0ffee1", desc.Platform, out, err, testTag)
			}
		}
	}
	slices.Sort(plats)
	if !slices.Equal(plats, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("index platforms %v, want exactly linux/amd64 and linux/arm64", plats)
	}
}

// Negative control: each violation the contract names is reported when an
// image commits it.
func TestCheckImageRejectsViolations(t *testing.T) {
	img := pushedImage(t)
	idx := remoteIndex(t, img.Ref)
	arm, err := idx.Image(mustPlatformDigest(t, idx, "arm64"))
	if err != nil {
		t.Fatal(err)
	}
	armPlat := v1.Platform{OS: "linux", Architecture: "arm64"}
	if _, errs := checkImage(arm, armPlat); len(errs) != 0 {
		t.Fatalf("the released arm64 image itself fails: %v", errs)
	}

	shell := mustLayer(t, map[string][]byte{"bin/sh": []byte("#!")})
	withShell, err := mutate.AppendLayers(arm, shell)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := arm.ConfigFile()
	asRoot := cf.DeepCopy()
	asRoot.Config.User = "0"
	asRoot.Config.Entrypoint = []string{"/bin/sh"}
	rootImg, err := mutate.ConfigFile(arm, asRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		img  v1.Image
		plat v1.Platform
		want []string
	}{
		{"extra file", withShell, armPlat, []string{"bin/sh, which the image must not have"}},
		{"root user and shell entrypoint", rootImg, armPlat, []string{`user "0"`, "entrypoint"}},
		// The arm64 image claimed as amd64: the binary's ELF machine gives it away.
		{"wrong architecture", arm, v1.Platform{OS: "linux", Architecture: "amd64"}, []string{"ELF machine EM_AARCH64, want EM_X86_64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errs := checkImage(tc.img, tc.plat)
			joined := fmt.Sprint(errs)
			for _, w := range tc.want {
				if !strings.Contains(joined, w) {
					t.Errorf("violation %q not reported; got %v", w, errs)
				}
			}
		})
	}
	if err := checkELF(mustRead(t, "/bin/ls"), runtime.GOARCH); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("checkELF(/bin/ls) = %v, want a dynamic-linking finding", err)
	}
}

// The build is reproducible: the same commit built again into an OCI layout
// (the `make image` path without a registry) has the very digest that was
// pushed.
func TestImageReproducible(t *testing.T) {
	img := pushedImage(t)
	dir := filepath.Join(t.TempDir(), "oci")
	out := run(t, repoRoot(t), nil, releaser(t), "image", "-version", testTag, "-commit", "c0ffee1", "-layout", dir)
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Digest.String() != img.Digest {
		t.Fatalf("layout index %+v, want one entry with the pushed digest %s", m.Manifests, img.Digest)
	}
	if m.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != testTag {
		t.Errorf("layout entry annotations %v, want ref.name %s", m.Manifests[0].Annotations, testTag)
	}
}

func mustPlatformDigest(t *testing.T, idx v1.ImageIndex, arch string) v1.Hash {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.Architecture == arch {
			return d.Digest
		}
	}
	t.Fatalf("no %s image in the index", arch)
	return v1.Hash{}
}

func mustLayer(t *testing.T, files map[string][]byte) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n, b := range files {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	tw.Close()
	raw := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
