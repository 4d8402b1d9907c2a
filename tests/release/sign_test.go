package release

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// signer is cosign with a key pair generated for this test run. Everything
// stays offline: no transparency log upload, no TUF or signing-config fetch,
// registries on loopback over plain HTTP. The release workflow signs
// keylessly instead (docs/release.md); the artifacts cosign writes to the
// registry are the same kind.
type signer struct {
	bin, key, pub string
	env           []string
}

var sharedSigner shared[signer]

func cosign(t *testing.T) signer {
	t.Helper()
	return sharedSigner.get(t, "cosign", func() (signer, error) {
		bin, err := tools.Cosign(toolCtx(t))
		if err != nil {
			return signer{}, err
		}
		dir, err := sharedDir("release-cosign-")
		if err != nil {
			return signer{}, err
		}
		s := signer{bin: bin, key: filepath.Join(dir, "cosign.key"), pub: filepath.Join(dir, "cosign.pub")}
		s.env = []string{
			"COSIGN_PASSWORD=" + "test-key-password",
			// cosign's TUF cache and docker config lookups stay in here.
			"HOME=" + dir, "TUF_ROOT=" + filepath.Join(dir, "tuf"), "DOCKER_CONFIG=" + filepath.Join(dir, "docker"),
		}
		if out, err := runErr(t, dir, s.env, bin, "generate-key-pair", "--output-key-prefix", filepath.Join(dir, "cosign")); err != nil {
			return signer{}, fmt.Errorf("cosign generate-key-pair: %w\n%s", err, out)
		}
		return s, nil
	})
}

var offlineSign = []string{"--yes", "--tlog-upload=false", "--use-signing-config=false", "--allow-http-registry"}
var offlineVerify = []string{"--insecure-ignore-tlog=true", "--allow-http-registry"}

func (s signer) sign(t *testing.T, ref string) string {
	t.Helper()
	args := append([]string{"sign", "--key", s.key}, offlineSign...)
	return run(t, "", s.env, s.bin, append(args, ref)...)
}

func (s signer) verify(t *testing.T, ref string) (string, error) {
	t.Helper()
	args := append([]string{"verify", "--key", s.pub}, offlineVerify...)
	return runErr(t, "", s.env, s.bin, append(args, ref)...)
}

// cosign signs the pushed index by digest and verifies it by tag; once the
// tag is moved to an index nobody signed, verification by tag fails.
func TestCosignSignVerifyAndTamper(t *testing.T) {
	img := pushedImage(t)
	s := cosign(t)

	// A tag of its own, so moving it cannot disturb the other tests.
	tag := img.Repo + ":tamper-target"
	src, err := name.ParseReference(img.Ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(src)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := name.ParseReference(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(dst, idx); err != nil {
		t.Fatal(err)
	}

	t.Logf("cosign sign:\n%s", s.sign(t, img.Repo+"@"+img.Digest))
	out, err := s.verify(t, tag)
	if err != nil {
		t.Fatalf("cosign verify of the signed index failed: %v\n%s", err, out)
	}
	t.Logf("cosign verify %s:\n%s", tag, out)
	claims := verifiedClaims(t, out)
	if len(claims) == 0 {
		t.Fatalf("cosign verify printed no verified signature payload:\n%s", out)
	}
	// cosign v3 lists every verified bundle on the digest, the SBOM
	// attestation's too when TestSBOMAttestation ran first: one of them must
	// be the image signature itself.
	signed := false
	for _, c := range claims {
		if c.Critical.Image.DockerManifestDigest != img.Digest {
			t.Errorf("verified signature is for %s, want the index %s", c.Critical.Image.DockerManifestDigest, img.Digest)
		}
		signed = signed || c.Critical.Type == "https://sigstore.dev/cosign/sign/v1"
	}
	if !signed {
		t.Errorf("no verified cosign image signature (type cosign/sign/v1) among %+v", claims)
	}

	// Tamper: the same tag now names an index with one platform dropped.
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	tampered := mutate.RemoveManifests(idx, func(d v1.Descriptor) bool {
		return d.Platform != nil && d.Platform.Architecture == m.Manifests[0].Platform.Architecture
	})
	td, err := tampered.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if td.String() == img.Digest {
		t.Fatal("the tampered index has the signed digest")
	}
	if err := remote.WriteIndex(dst, tampered); err != nil {
		t.Fatal(err)
	}
	out, err = s.verify(t, tag)
	if err == nil {
		t.Fatalf("cosign verify accepted the tampered tag (now %s):\n%s", td, out)
	}
	t.Logf("cosign verify of the tampered tag (%s) fails as it must: %v\n%s", td, err, out)

	// And a different key does not verify the genuine index either.
	other := filepath.Join(t.TempDir(), "other")
	run(t, "", s.env, s.bin, "generate-key-pair", "--output-key-prefix", other)
	args := append([]string{"verify", "--key", other + ".pub"}, offlineVerify...)
	if out, err := runErr(t, "", s.env, s.bin, append(args, img.Repo+"@"+img.Digest)...); err == nil {
		t.Fatalf("cosign verify accepted the signature under another key:\n%s", out)
	}
}

// simpleSigningClaim is the payload cosign signs (the "simple signing"
// format) as `cosign verify` prints it.
type simpleSigningClaim struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
}

// verifiedClaims reads the JSON array cosign verify prints on stdout.
func verifiedClaims(t *testing.T, out string) []simpleSigningClaim {
	t.Helper()
	var claims []simpleSigningClaim
	for _, line := range jsonLines(t, out, "[") {
		var batch []simpleSigningClaim
		if err := json.Unmarshal([]byte(line), &batch); err != nil {
			t.Fatalf("cosign verify output: %v\n%s", err, line)
		}
		claims = append(claims, batch...)
	}
	return claims
}

// jsonLines is the lines of cosign's output that start with open ("[" or
// "{"), trimmed: its JSON documents, one a line, among its other messages.
func jsonLines(t *testing.T, out, open string) []string {
	t.Helper()
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, open) {
			lines = append(lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// inTotoStatement is a DSSE payload of `cosign verify-attestation`.
type inTotoStatement struct {
	PredicateType string                               `json:"predicateType"`
	Subject       []struct{ Digest map[string]string } `json:"subject"`
	Predicate     json.RawMessage                      `json:"predicate"`
}

// attestations decodes every DSSE envelope cosign verify-attestation prints.
func attestations(t *testing.T, out string) []inTotoStatement {
	t.Helper()
	var res []inTotoStatement
	for _, line := range jsonLines(t, out, "{") {
		var env struct {
			PayloadType string `json:"payloadType"`
			Payload     string `json:"payload"`
		}
		if err := json.Unmarshal([]byte(line), &env); err != nil || env.Payload == "" {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(env.Payload)
		if err != nil {
			t.Fatalf("attestation payload: %v", err)
		}
		var st inTotoStatement
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatalf("in-toto statement: %v\n%s", err, raw)
		}
		res = append(res, st)
	}
	return res
}
