package release

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// actionlint runs without shellcheck and pyflakes (neither is a Go module),
// the same on every machine whatever happens to be on PATH.
var actionlintArgs = []string{"-no-color", "-shellcheck=", "-pyflakes="}

// The repository's workflows pass the pinned actionlint.
func TestWorkflowsLint(t *testing.T) {
	bin, err := tools.Actionlint(toolCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(repoRoot(t), ".github", "workflows", "*.yml"))
	if len(files) < 2 {
		t.Fatalf("want the test and release workflows, found %v", files)
	}
	out, err := runErr(t, repoRoot(t), nil, bin, append(actionlintArgs, files...)...)
	if err != nil {
		t.Fatalf("actionlint: %v\n%s", err, out)
	}

	// Negative control: the same run fails a workflow with an undefined
	// context and a job without runs-on.
	broken := filepath.Join(t.TempDir(), ".github", "workflows")
	if err := os.MkdirAll(broken, 0o755); err != nil {
		t.Fatal(err)
	}
	bad := "name: broken\non: push\njobs:\n  x:\n    steps:\n      - run: echo ${{ github.nonexistent_context }}\n"
	if err := os.WriteFile(filepath.Join(broken, "bad.yml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = runErr(t, filepath.Dir(filepath.Dir(broken)), nil, bin, append(actionlintArgs, filepath.Join(broken, "bad.yml"))...)
	if err == nil || !strings.Contains(out, "runs-on") || !strings.Contains(out, "nonexistent_context") {
		t.Fatalf("actionlint passed a broken workflow or missed a finding (%v):\n%s", err, out)
	}
}

type workflow struct {
	// sigs.k8s.io/yaml reads YAML 1.1, where the bare key on is the boolean
	// true; GitHub reads it as the string "on".
	On          map[string]any    `json:"true"`
	Env         map[string]string `json:"env"`
	Permissions map[string]string `json:"permissions"`
	Jobs        map[string]struct {
		Permissions map[string]string `json:"permissions"`
		Steps       []struct {
			Name string `json:"name"`
			Run  string `json:"run"`
			Uses string `json:"uses"`
		} `json:"steps"`
	} `json:"jobs"`
}

func readWorkflow(t *testing.T, name string) (workflow, string) {
	t.Helper()
	raw := mustRead(t, filepath.Join(repoRoot(t), ".github", "workflows", name))
	var w workflow
	if err := yaml.Unmarshal(raw, &w); err != nil {
		t.Fatal(err)
	}
	return w, string(raw)
}

// The workflows do what the release contract says, with the tools the tests
// exercise at the same pinned versions.
func TestWorkflowsContract(t *testing.T) {
	test, testRaw := readWorkflow(t, "test.yml")
	for _, ev := range []string{"push", "pull_request"} {
		if _, ok := test.On[ev]; !ok {
			t.Errorf("test.yml does not run on %s", ev)
		}
	}
	if !strings.Contains(testRaw, "bash .ci/run") {
		t.Error("test.yml does not run .ci/run (make test)")
	}

	rel, relRaw := readWorkflow(t, "release.yml")
	push, _ := rel.On["push"].(map[string]any)
	tags, _ := push["tags"].([]any)
	if len(tags) != 1 || tags[0] != "v*.*.*" {
		t.Errorf("release.yml triggers on tags %v, want [v*.*.*]", tags)
	}
	for k, want := range map[string]string{
		"COSIGN_VERSION":          tools.CosignVersion,
		"CYCLONEDX_GOMOD_VERSION": tools.CycloneDXGomodVersion,
		"HELM_VERSION":            tools.HelmV3Version,
	} {
		if rel.Env[k] != want {
			t.Errorf("release.yml %s=%q, the tested pin is %q", k, rel.Env[k], want)
		}
	}
	job, ok := rel.Jobs["release"]
	if !ok {
		t.Fatal("release.yml has no release job")
	}
	if job.Permissions["id-token"] != "write" || job.Permissions["packages"] != "write" {
		t.Errorf("release job permissions %v: keyless signing needs id-token: write, ghcr packages: write", job.Permissions)
	}
	if rel.Permissions["contents"] != "read" || len(rel.Permissions) != 1 {
		t.Errorf("workflow-level permissions %v, want only contents: read", rel.Permissions)
	}
	var steps strings.Builder
	for _, s := range job.Steps {
		steps.WriteString(s.Run + "\n")
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`make image PUSH=1`),
		regexp.MustCompile(`make sbom`),
		regexp.MustCompile(`cosign sign --yes "\$\{IMAGE\}@\$\{DIGEST\}"`),
		regexp.MustCompile(`cosign attest --yes --type cyclonedx --predicate dist/sbom.cdx.json`),
		regexp.MustCompile(`(?s)releaser pin-chart .*-digest "\$\{DIGEST\}"`),
		regexp.MustCompile(`helm push `),
		regexp.MustCompile(`cosign verify "\$\{IMAGE\}@\$\{DIGEST\}"`),
	} {
		if !want.MatchString(steps.String()) {
			t.Errorf("release job has no step matching %s", want)
		}
	}
	// Keyless: no key material anywhere in the workflow.
	if strings.Contains(relRaw, "--key") {
		t.Error("release.yml signs with a key; the release signs keylessly")
	}
	makefile := string(mustRead(t, filepath.Join(repoRoot(t), "Makefile")))
	if !strings.Contains(makefile, "CYCLONEDX_GOMOD_VERSION ?= "+tools.CycloneDXGomodVersion+"\n") {
		t.Errorf("Makefile's CYCLONEDX_GOMOD_VERSION is not the tested pin %s", tools.CycloneDXGomodVersion)
	}
}
