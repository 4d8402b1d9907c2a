package release

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

type kubeconformer struct {
	bin       string
	locations []string
}

var sharedKubeconform shared[kubeconformer]

// theKubeconform: the pinned kubeconform with the strict Kubernetes schemas,
// the Flux controllers' CRD schemas and the chart tests' cert-manager subset.
func theKubeconform(t *testing.T) kubeconformer {
	t.Helper()
	return sharedKubeconform.get(t, "kubeconform setup", func() (kubeconformer, error) {
		ctx := toolCtx(t)
		bin, err := tools.Kubeconform(ctx)
		if err != nil {
			return kubeconformer{}, err
		}
		k8s, err := tools.KubernetesSchemaLocation(ctx)
		if err != nil {
			return kubeconformer{}, err
		}
		flux, err := tools.FluxSchemaLocation(ctx)
		if err != nil {
			return kubeconformer{}, err
		}
		crds := filepath.Join(repoRoot(t), "chart", "tests", "testdata", "crd-schemas", "{{ .ResourceKind }}{{ .KindSuffix }}.json")
		return kubeconformer{bin: bin, locations: []string{k8s, flux, crds}}, nil
	})
}

type kcResult struct {
	Filename, Kind, Name, Version, Status, Msg string
}

// validate runs kubeconform -strict (no -ignore-missing-schemas: a kind
// without a schema is an error) and returns one result per object.
func (k kubeconformer) validate(t *testing.T, docs []byte) []kcResult {
	t.Helper()
	args := []string{"-strict", "-verbose", "-output", "json", "-kubernetes-version", tools.KubernetesVersion}
	for _, l := range k.locations {
		args = append(args, "-schema-location", l)
	}
	cmd := exec.Command(k.bin, append(args, "-")...)
	cmd.Stdin = bytes.NewReader(docs)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var out struct{ Resources []kcResult }
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("kubeconform (%v): %v\n%s%s", runErr, err, stdout.String(), stderr.String())
	}
	return slices.DeleteFunc(out.Resources, func(r kcResult) bool { return r.Status == "statusEmpty" })
}

func fluxFiles(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "flux", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no deploy/flux/*.yaml (%v)", err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		out[filepath.Base(p)] = mustRead(t, p)
	}
	return out
}

// The Flux example validates strictly against the Flux controllers' own CRD
// schemas, and the same validation rejects a misspelt field.
func TestFluxExampleValidates(t *testing.T) {
	k := theKubeconform(t)
	var all []byte
	for name, b := range fluxFiles(t) {
		all = append(all, []byte("---\n# "+name+"\n")...)
		all = append(all, b...)
	}
	res := k.validate(t, all)
	kinds := map[string]bool{}
	for _, r := range res {
		kinds[r.Kind] = true
		if r.Status != "statusValid" {
			t.Errorf("%s %s: %s %s", r.Kind, r.Name, r.Status, r.Msg)
		}
	}
	for _, want := range []string{"OCIRepository", "HelmRelease"} {
		if !kinds[want] {
			t.Errorf("deploy/flux has no %s (validated: %v)", want, kinds)
		}
	}

	// Negative controls: the schemas are strict, not merely present.
	hr := fluxFiles(t)["helmrelease.yaml"]
	for _, tc := range []struct{ name, doc, want string }{
		{"misspelt dependsOn", strings.Replace(string(hr), "dependsOn:", "dependOn:", 1), "dependOn"},
		{"interval of the wrong type", strings.Replace(string(hr), "interval: 30m", "interval: 30", 1), "interval"},
		{"unknown kind version", strings.Replace(string(hr), "helm.toolkit.fluxcd.io/v2", "helm.toolkit.fluxcd.io/v9", 1), "could not find schema"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := k.validate(t, []byte(tc.doc))
			if len(res) != 1 || res[0].Status == "statusValid" || !strings.Contains(res[0].Msg, tc.want) {
				t.Errorf("kubeconform accepted or misreported the broken HelmRelease: %+v", res)
			}
		})
	}
}

type fluxHelmRelease struct {
	Metadata struct{ Name, Namespace string }
	Spec     struct {
		TargetNamespace string `json:"targetNamespace"`
		ChartRef        struct {
			Kind, Name, Namespace string
		} `json:"chartRef"`
		DependsOn []struct{ Name, Namespace string } `json:"dependsOn"`
		Values    map[string]any                     `json:"values"`
	}
}

type fluxOCIRepository struct {
	Metadata struct{ Name, Namespace string }
	Spec     struct {
		URL    string `json:"url"`
		Verify struct {
			Provider          string
			MatchOIDCIdentity []struct{ Issuer, Subject string } `json:"matchOIDCIdentity"`
		}
	}
}

// The HelmRelease installs the chart the OCIRepository fetches, after
// cert-manager, and its values render through helm into objects that
// validate, in guacd's namespace, with the image pinned by the chart.
func TestFluxExampleRenders(t *testing.T) {
	files := fluxFiles(t)
	var hr fluxHelmRelease
	var repo fluxOCIRepository
	if err := yaml.Unmarshal(files["helmrelease.yaml"], &hr); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(files["ocirepository.yaml"], &repo); err != nil {
		t.Fatal(err)
	}
	if hr.Spec.ChartRef.Kind != "OCIRepository" || hr.Spec.ChartRef.Name != repo.Metadata.Name || hr.Spec.ChartRef.Namespace != repo.Metadata.Namespace {
		t.Errorf("chartRef %+v does not name OCIRepository %s/%s", hr.Spec.ChartRef, repo.Metadata.Namespace, repo.Metadata.Name)
	}
	if !strings.HasSuffix(repo.Spec.URL, "/charts/k8s-ws-proxy") || !strings.HasPrefix(repo.Spec.URL, "oci://") {
		t.Errorf("OCIRepository url %q is not the chart release.yml pushes", repo.Spec.URL)
	}
	if !slices.ContainsFunc(hr.Spec.DependsOn, func(d struct{ Name, Namespace string }) bool { return d.Name == "cert-manager" }) {
		t.Errorf("TLS through cert-manager is on, but dependsOn %+v lacks cert-manager", hr.Spec.DependsOn)
	}
	// The signature policy admits exactly the release workflow on a tag.
	if len(repo.Spec.Verify.MatchOIDCIdentity) != 1 || repo.Spec.Verify.Provider != "cosign" {
		t.Fatalf("verify %+v: want one cosign keyless identity", repo.Spec.Verify)
	}
	id := repo.Spec.Verify.MatchOIDCIdentity[0]
	subject, issuer := regexp.MustCompile(id.Subject), regexp.MustCompile(id.Issuer)
	if !issuer.MatchString("https://token.actions.githubusercontent.com") {
		t.Errorf("issuer %q does not match GitHub Actions", id.Issuer)
	}
	for s, want := range map[string]bool{
		"https://github.com/k8s-ws-proxy/k8s-ws-proxy/.github/workflows/release.yml@refs/tags/v1.2.3": true,
		"https://github.com/k8s-ws-proxy/k8s-ws-proxy/.github/workflows/release.yml@refs/heads/main":  false,
		"https://github.com/someone/fork/.github/workflows/release.yml@refs/tags/v1.2.3":              false,
		"https://github.com/k8s-ws-proxy/k8s-ws-proxy/.github/workflows/test.yml@refs/tags/v1.2.3":    false,
	} {
		if subject.MatchString(s) != want {
			t.Errorf("subject %q matches %s: %v, want %v", id.Subject, s, !want, want)
		}
	}

	// Render the pinned chart (as release.yml packages it) with these values.
	digest := "sha256:" + strings.Repeat("ab", 32)
	chart := filepath.Join(t.TempDir(), "chart")
	run(t, repoRoot(t), nil, releaser(t), "pin-chart", "-chart", "chart", "-out", chart,
		"-image", "ghcr.io/k8s-ws-proxy/k8s-ws-proxy", "-tag", testTag, "-digest", digest)
	values, err := yaml.Marshal(hr.Spec.Values)
	if err != nil {
		t.Fatal(err)
	}
	vf := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(vf, values, 0o644); err != nil {
		t.Fatal(err)
	}
	helm, err := tools.Helm(toolCtx(t), tools.HelmV3Version)
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, "", nil, helm, "template", hr.Spec.TargetNamespace, chart, "--namespace", hr.Spec.TargetNamespace,
		"-f", vf, "--kube-version", tools.KubernetesVersion, "--api-versions", "cert-manager.io/v1")
	res := theKubeconform(t).validate(t, []byte(out))
	kinds := map[string]int{}
	for _, r := range res {
		kinds[r.Kind]++
		if r.Status != "statusValid" {
			t.Errorf("rendered %s %s: %s %s", r.Kind, r.Name, r.Status, r.Msg)
		}
	}
	for _, want := range []string{"DaemonSet", "NetworkPolicy", "Certificate", "Job"} {
		if kinds[want] == 0 {
			t.Errorf("the Flux values render no %s (kinds %v)", want, kinds)
		}
	}
	if wantImage := "ghcr.io/k8s-ws-proxy/k8s-ws-proxy:" + testTag + "@" + digest; !strings.Contains(out, `image: "`+wantImage+`"`) {
		t.Errorf("rendered chart does not run the pinned image %s", wantImage)
	}
	for _, doc := range strings.Split(out, "\n---") {
		var m struct{ Metadata struct{ Namespace string } }
		if err := yaml.Unmarshal([]byte(doc), &m); err == nil && m.Metadata.Namespace != "" && m.Metadata.Namespace != hr.Spec.TargetNamespace {
			t.Errorf("object rendered into namespace %q, want guacd's %q", m.Metadata.Namespace, hr.Spec.TargetNamespace)
		}
	}
}
