package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// crdSchemaKinds are the kinds that are not in the Kubernetes OpenAPI spec and
// are validated against the hand-kept subsets of their upstream CRD schemas in
// testdata/crd-schemas instead. Any other kind must be in the pinned spec:
// kubeconform runs without -ignore-missing-schemas, so nothing is skipped.
var crdSchemaKinds = map[string]string{
	"Certificate":    "certificate-cert-manager-v1.json",
	"ServiceMonitor": "servicemonitor-monitoring-v1.json",
}

type validator struct {
	bin      string
	k8sLoc   string
	crdLoc   string
	setupErr error
}

var (
	validatorOnce sync.Once
	theValidator  validator
)

func getValidator(t *testing.T) validator {
	t.Helper()
	validatorOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		v := validator{}
		v.bin, v.setupErr = tools.Kubeconform(ctx)
		if v.setupErr == nil {
			v.k8sLoc, v.setupErr = tools.KubernetesSchemaLocation(ctx)
		}
		if v.setupErr == nil {
			var dir string
			dir, v.setupErr = filepath.Abs(filepath.Join("testdata", "crd-schemas"))
			v.crdLoc = filepath.Join(dir, "{{ .ResourceKind }}{{ .KindSuffix }}.json")
		}
		theValidator = v
	})
	if theValidator.setupErr != nil {
		t.Fatalf("setting up kubeconform: %v", theValidator.setupErr)
	}
	return theValidator
}

type kcResult struct {
	Kind, Name, Version, Status, Msg string
	ValidationErrors                 []struct{ Path, Msg string }
}

// validate runs kubeconform -strict on a multi-document stream and returns
// one result per document (-verbose reports the valid ones too).
func (v validator) validate(t *testing.T, docs []byte) []kcResult {
	t.Helper()
	cmd := exec.Command(v.bin, "-strict", "-verbose", "-output", "json",
		"-kubernetes-version", tools.KubernetesVersion,
		"-schema-location", v.k8sLoc, "-schema-location", v.crdLoc, "-")
	cmd.Stdin = bytes.NewReader(docs)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run() // non-zero when anything is invalid; judged below
	var out struct{ Resources []kcResult }
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("kubeconform output (%v): %v\n%s%s", runErr, err, stdout.String(), stderr.String())
	}
	// Documents holding only comments (helm's "# Source:" of an empty
	// template) are reported as empty; they are not objects.
	return slices.DeleteFunc(out.Resources, func(r kcResult) bool { return r.Status == "statusEmpty" })
}

// Gate 10: every rendered manifest of every variant validates strictly.
func TestOpenAPIValidation(t *testing.T) {
	v := getValidator(t)
	k8sDir := filepath.Dir(v.k8sLoc)
	forEachHelm(t, func(t *testing.T, h helm) {
		for name, args := range map[string][]string{
			"minimal":       minimalArgs,
			"full":          fullArgs,
			"existing tls":  {"-f", testdata("values-existing-tls.yaml")},
			"bootstrap off": append(slices.Clone(minimalArgs), "--set", "bootstrap.enabled=false"),
		} {
			t.Run(name, func(t *testing.T) {
				out, ms := h.mustRenderRaw(t, "proxy", ns, args...)
				results := v.validate(t, []byte(out))
				if len(results) != len(ms) {
					t.Fatalf("kubeconform reported %d resources for %d rendered", len(results), len(ms))
				}
				for _, r := range results {
					if r.Status != "statusValid" {
						t.Errorf("%s/%s: %s %s %v", r.Kind, r.Name, r.Status, r.Msg, r.ValidationErrors)
					}
				}
				// Which schema judged each kind: the pinned spec, except the
				// listed CRD kinds (and those must not be in the spec, or the
				// subset would shadow nothing and mean nothing).
				for _, m := range ms {
					gv := strings.SplitN(m.APIVersion, "/", 2)
					group, version := "", gv[0]
					if len(gv) == 2 {
						group, version = gv[0], gv[1]
					}
					file := tools.SchemaFileName(group, version, m.Kind)
					_, inSpec := os.Stat(filepath.Join(k8sDir, file))
					crdFile, isCRD := crdSchemaKinds[m.Kind]
					switch {
					case isCRD && (inSpec == nil || crdFile != file):
						t.Errorf("%s: CRD kind with schema file %s (listed %s, in spec: %v)", m.id(), file, crdFile, inSpec == nil)
					case !isCRD && inSpec != nil:
						t.Errorf("%s: no schema %s in the pinned Kubernetes spec", m.id(), file)
					}
				}
			})
		}
	})
}

// The same validator must reject each class of mistake in the chart's own
// objects: otherwise a green gate 10 would mean nothing.
func TestOpenAPIValidationCatchesBrokenManifests(t *testing.T) {
	v := getValidator(t)
	h := helm{bin: helmBin(t, tools.HelmV4Version), version: tools.HelmV4Version, chart: chartPath(t)}
	ms := h.mustRender(t, "proxy", ns, fullArgs...)

	mutate := func(kind, name string, fn func(obj map[string]any)) []byte {
		t.Helper()
		m := ms.get(t, kind, name)
		var obj map[string]any
		if err := yaml.Unmarshal(m.Raw, &obj); err != nil {
			t.Fatal(err)
		}
		fn(obj)
		out, err := yaml.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	container := func(obj map[string]any) map[string]any {
		return dig(obj, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)
	}
	cases := []struct {
		name string
		doc  []byte
		want string
	}{
		{"unknown field in a container", mutate("DaemonSet", "k8s-ws-proxy", func(o map[string]any) {
			container(o)["subpath"] = "key" // a typo for subPath, in the wrong place
		}), "additional properties 'subpath' not allowed"},
		{"unknown top-level field", mutate("Service", "k8s-ws-proxy", func(o map[string]any) {
			o["specs"] = map[string]any{}
		}), "additional properties 'specs' not allowed"},
		{"wrong type", mutate("DaemonSet", "k8s-ws-proxy", func(o map[string]any) {
			dig(o, "spec", "template", "spec").(map[string]any)["terminationGracePeriodSeconds"] = "30"
		}), "/spec/template/spec/terminationGracePeriodSeconds"},
		{"wrong enum-free type in a list", mutate("Job", "k8s-ws-proxy-bootstrap", func(o map[string]any) {
			container(o)["args"] = "bootstrap-secret"
		}), "/spec/template/spec/containers/0/args"},
		{"missing required container name", mutate("DaemonSet", "k8s-ws-proxy", func(o map[string]any) {
			delete(container(o), "name")
		}), "missing property 'name'"},
		{"missing required selector", mutate("DaemonSet", "k8s-ws-proxy", func(o map[string]any) {
			delete(o["spec"].(map[string]any), "selector")
		}), "missing property 'selector'"},
		{"missing required roleRef", mutate("RoleBinding", "k8s-ws-proxy-bootstrap", func(o map[string]any) {
			delete(o, "roleRef")
		}), "missing property 'roleRef'"},
		{"CRD subset: unknown field", mutate("ServiceMonitor", "k8s-ws-proxy", func(o map[string]any) {
			o["spec"].(map[string]any)["endpoint"] = []any{}
		}), "additional properties 'endpoint' not allowed"},
		{"CRD subset: missing issuerRef", mutate("Certificate", "k8s-ws-proxy", func(o map[string]any) {
			delete(o["spec"].(map[string]any), "issuerRef")
		}), "missing property 'issuerRef'"},
		{"kind not in the pinned spec", []byte("apiVersion: apps/v1beta2\nkind: DaemonSet\nmetadata: {name: x}\n"),
			"could not find schema"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			results := v.validate(t, c.doc)
			if len(results) != 1 {
				t.Fatalf("%d results", len(results))
			}
			r := results[0]
			detail, _ := json.Marshal(r)
			if r.Status == "statusValid" || !strings.Contains(string(detail), c.want) {
				t.Fatalf("want rejection mentioning %q, got %s", c.want, detail)
			}
		})
	}
}

// The stand-in CRDs that let a bare API server accept the fully-on render
// (testdata/crds, used by the end-to-end tests) are valid CRD objects.
func TestStandInCRDsValidate(t *testing.T) {
	v := getValidator(t)
	files, err := filepath.Glob(filepath.Join("testdata", "crds", "*.yaml"))
	if err != nil || len(files) != len(crdSchemaKinds) {
		t.Fatalf("stand-in CRDs %v (%v), want one per kind in %v", files, err, sortedKeys(crdSchemaKinds))
	}
	for _, f := range files {
		doc, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		results := v.validate(t, doc)
		if len(results) != 1 || results[0].Kind != "CustomResourceDefinition" || results[0].Status != "statusValid" {
			t.Errorf("%s: %+v", f, results)
		}
	}
}
