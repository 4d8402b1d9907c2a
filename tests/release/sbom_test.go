package release

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

type cdxBOM struct {
	BOMFormat   string `json:"bomFormat"`
	SpecVersion string `json:"specVersion"`
	Metadata    struct {
		Component cdxComponent `json:"component"`
	} `json:"metadata"`
	Components []cdxComponent `json:"components"`
}

type cdxComponent struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	PURL    string `json:"purl"`
}

// moduleVersion is the version of a dependency the main module builds with.
func moduleVersion(t *testing.T, mod string) string {
	t.Helper()
	out := run(t, repoRoot(t), nil, "go", "list", "-m", "-f", "{{.Version}}", mod)
	return strings.TrimSpace(out)
}

// The CycloneDX SBOM of the binary is attached to the pushed index as a
// signed attestation; reading it back from the registry (and verifying its
// signature) yields client-go and gorilla/websocket at the versions go.mod
// builds with.
func TestSBOMAttestation(t *testing.T) {
	img := pushedImage(t)
	s := cosign(t)
	gomod, err := tools.CycloneDXGomod(toolCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	// The SBOM of the very binary the amd64 image ships, as `make sbom`
	// makes it: from the build info the Go linker embedded.
	idx := remoteIndex(t, img.Ref)
	amd, err := idx.Image(mustPlatformDigest(t, idx, "amd64"))
	if err != nil {
		t.Fatal(err)
	}
	facts, errs := checkImage(amd, v1.Platform{OS: "linux", Architecture: "amd64"})
	if len(errs) > 0 || facts.Binary == nil {
		t.Fatalf("amd64 image: %v", errs)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "k8s-ws-proxy")
	if err := os.WriteFile(bin, facts.Binary, 0o755); err != nil {
		t.Fatal(err)
	}
	sbom := filepath.Join(dir, "sbom.cdx.json")
	run(t, repoRoot(t), nil, gomod, "bin", "-json", "-version", testTag, "-output", sbom, bin)

	ref := img.Repo + "@" + img.Digest
	args := append([]string{"attest", "--key", s.key, "--type", "cyclonedx", "--predicate", sbom}, offlineSign...)
	t.Logf("cosign attest:\n%s", run(t, "", s.env, s.bin, append(args, ref)...))

	vargs := append([]string{"verify-attestation", "--key", s.pub, "--type", "cyclonedx"}, offlineVerify...)
	out := run(t, "", s.env, s.bin, append(vargs, ref)...)
	// Negative control: no SPDX attestation was made, so none verifies.
	spdx := append([]string{"verify-attestation", "--key", s.pub, "--type", "spdxjson"}, offlineVerify...)
	if o, err := runErr(t, "", s.env, s.bin, append(spdx, ref)...); err == nil {
		t.Errorf("verify-attestation --type spdxjson succeeded with no SPDX attestation:\n%.2000s", o)
	}
	var bom *cdxBOM
	for _, st := range attestations(t, out) {
		if st.PredicateType != "https://cyclonedx.org/bom" {
			continue
		}
		matched := false
		for _, sub := range st.Subject {
			matched = matched || "sha256:"+sub.Digest["sha256"] == img.Digest
		}
		if !matched {
			t.Errorf("attestation subject %+v is not the index %s", st.Subject, img.Digest)
		}
		bom = &cdxBOM{}
		if err := json.Unmarshal(st.Predicate, bom); err != nil {
			t.Fatal(err)
		}
	}
	if bom == nil {
		t.Fatalf("no CycloneDX attestation read back from %s:\n%.4000s", ref, out)
	}
	if bom.BOMFormat != "CycloneDX" {
		t.Errorf("bomFormat %q", bom.BOMFormat)
	}
	t.Logf("SBOM read back: CycloneDX %s, %d components, main component %s", bom.SpecVersion, len(bom.Components), bom.Metadata.Component.PURL)
	for _, mod := range []string{"k8s.io/client-go", "github.com/gorilla/websocket"} {
		want := moduleVersion(t, mod)
		found := false
		for _, c := range bom.Components {
			if strings.HasPrefix(c.PURL, "pkg:golang/"+mod+"@") {
				found = true
				if c.Version != want {
					t.Errorf("SBOM has %s %s, go.mod builds with %s", mod, c.Version, want)
				}
				t.Logf("SBOM: %s %s (%s)", mod, c.Version, c.PURL)
			}
		}
		if !found {
			t.Errorf("SBOM lacks %s", mod)
		}
	}
}
