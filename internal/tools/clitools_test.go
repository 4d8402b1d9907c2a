package tools

// Tests of the command-line tools the chart and cluster tests run: helm
// (template), kubectl and kubeconform (strict validation against schemas
// generated from the pinned spec). Each must be the pinned build.

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The built helm must report its pinned version and, with no --kube-version,
// assume the pinned Kubernetes rather than the 1.20 of an unflagged build.
func TestHelmPinnedVersions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	major, minor := kubeMajorMinor()
	for _, v := range HelmVersions {
		t.Run(v, func(t *testing.T) {
			bin, err := Helm(ctx, v)
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(ctx, bin, "version", "--template", "{{.Version}}").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != v {
				t.Fatalf("helm version = %q, %v; want %s", out, err, v)
			}
			chart := t.TempDir()
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(os.WriteFile(filepath.Join(chart, "Chart.yaml"), []byte("apiVersion: v2\nname: probe\nversion: 0.1.0\n"), 0o644))
			must(os.MkdirAll(filepath.Join(chart, "templates"), 0o755))
			must(os.WriteFile(filepath.Join(chart, "templates", "cm.yaml"), []byte(
				"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata: {kube: \"{{ .Capabilities.KubeVersion.Major }}.{{ .Capabilities.KubeVersion.Minor }}\"}\n"), 0o644))
			cmd := exec.CommandContext(ctx, bin, "template", "probe", chart)
			cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
			out, err = cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, out)
			}
			if want := `kube: "` + major + "." + minor + `"`; !strings.Contains(string(out), want) {
				t.Fatalf("default capabilities are not Kubernetes %s.%s:\n%s", major, minor, out)
			}
		})
	}
}

// TestKubectlModulePinned keeps kubectl's tools module on the release
// kube-apiserver is built from: k8s.io/kubernetes at KubernetesVersion and
// every staging module at its v0.x twin.
func TestKubectlModulePinned(t *testing.T) {
	b := kubectlBuild()
	data := toolGoMod(t, b, "k8s.io/kubernetes v"+KubernetesVersion)
	if !strings.Contains(string(data), "\ntool k8s.io/kubernetes/cmd/kubectl\n") {
		t.Errorf("%s/go.mod has no tool directive for k8s.io/kubernetes/cmd/kubectl", b.moduleDir)
	}
	checkStagingPinned(t, data, b.moduleDir)
}

// TestKubectlVersion builds (or reuses) kubectl and checks that it reports
// the pinned release, i.e. that it was built from k8s.io/kubernetes at
// KubernetesVersion with the version ldflags in effect.
func TestKubectlVersion(t *testing.T) {
	ctx, bin := builtTool(t, 30*time.Minute, Kubectl)
	cmd := exec.CommandContext(ctx, bin, "version", "--client", "-o", "json")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "none"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s version --client: %v\n%s", bin, err, out)
	}
	var v struct {
		ClientVersion struct{ GitVersion, Major, Minor string }
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("kubectl version output %q: %v", out, err)
	}
	if got, want := v.ClientVersion.GitVersion, "v"+KubernetesVersion; got != want {
		t.Errorf("kubectl client gitVersion = %q, want %q", got, want)
	}
}

func TestSchemaFileName(t *testing.T) {
	for _, c := range []struct{ g, v, k, want string }{
		{"", "v1", "Service", "service-v1.json"},
		{"apps", "v1", "DaemonSet", "daemonset-apps-v1.json"},
		{"rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebinding-rbac-v1.json"},
		{"monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitor-monitoring-v1.json"},
	} {
		if got := SchemaFileName(c.g, c.v, c.k); got != c.want {
			t.Errorf("SchemaFileName(%q,%q,%q) = %q, want %q", c.g, c.v, c.k, got, c.want)
		}
	}
}

// A small swagger document exercising every rule of the transformation.
const miniSpec = `{"definitions": {
  "a.Thing": {
    "x-kubernetes-group-version-kind": [{"group": "example.io", "version": "v1", "kind": "Thing"}],
    "required": ["spec"],
    "properties": {
      "apiVersion": {"type": "string"}, "kind": {"type": "string"},
      "spec": {"$ref": "#/definitions/a.Spec", "description": "d"}
    }
  },
  "a.Spec": {
    "properties": {
      "port": {"$ref": "#/definitions/intstr.IntOrString"},
      "labels": {"type": "object", "additionalProperties": {"type": "string"}},
      "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"x": {"type": "string"}}},
      "schema": {"$ref": "#/definitions/a.Props"}
    }
  },
  "a.Props": {
    "properties": {
      "format": {"type": "string"},
      "properties": {"type": "object", "additionalProperties": {"$ref": "#/definitions/a.Props"}}
    }
  },
  "intstr.IntOrString": {"type": "string", "format": "int-or-string"},
  "a.Unused": {"properties": {"y": {"type": "string"}}},
  "meta.DeleteOptions": {
    "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "DeleteOptions"}, {"group": "apps", "version": "v1", "kind": "DeleteOptions"}],
    "properties": {}
  }
}}`

func TestWriteStrictSchemas(t *testing.T) {
	dir := t.TempDir()
	files, err := writeStrictSchemas([]byte(miniSpec), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0] != "thing-example-v1.json" {
		t.Fatalf("files = %v; want only thing-example-v1.json (multi-kind envelopes skipped)", files)
	}
	raw, err := os.ReadFile(filepath.Join(dir, files[0]))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Definitions map[string]map[string]any `json:"definitions"`
		Properties  map[string]map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a.Thing", "a.Spec", "a.Props", "intstr.IntOrString"} {
		if _, ok := s.Definitions[want]; !ok {
			t.Errorf("closure lacks %s", want)
		}
	}
	if _, ok := s.Definitions["a.Unused"]; ok {
		t.Error("closure holds an unreferenced definition")
	}
	if s.Definitions["a.Thing"]["additionalProperties"] != false || s.Definitions["a.Spec"]["additionalProperties"] != false {
		t.Error("object schemas with properties must forbid additional properties")
	}
	props := s.Definitions["a.Spec"]["properties"].(map[string]any)
	if _, ok := props["raw"].(map[string]any)["additionalProperties"]; ok {
		t.Error("x-kubernetes-preserve-unknown-fields must stay open")
	}
	if ap := props["labels"].(map[string]any)["additionalProperties"]; ap.(map[string]any)["type"] != "string" {
		t.Errorf("map value schema changed: %v", ap)
	}
	if _, ok := s.Definitions["intstr.IntOrString"]["oneOf"]; !ok {
		t.Errorf("int-or-string not rewritten: %v", s.Definitions["intstr.IntOrString"])
	}
	// A property named "format" is not the format keyword.
	pp := s.Definitions["a.Props"]["properties"].(map[string]any)
	if f := pp["format"].(map[string]any); f["type"] != "string" {
		t.Errorf("property named format mangled: %v", f)
	}
	if _, ok := s.Definitions["a.Thing"]["properties"].(map[string]any)["spec"].(map[string]any)["description"]; ok {
		t.Error("descriptions should be dropped")
	}
	if s.Properties["kind"]["enum"].([]any)[0] != "Thing" || s.Properties["apiVersion"]["enum"].([]any)[0] != "example.io/v1" {
		t.Errorf("root does not pin apiVersion/kind: %v", s.Properties)
	}
}

func TestWriteStrictSchemasCollision(t *testing.T) {
	spec := `{"definitions": {
	  "a.X": {"x-kubernetes-group-version-kind": [{"group": "net.a.io", "version": "v1", "kind": "X"}]},
	  "b.X": {"x-kubernetes-group-version-kind": [{"group": "net.b.io", "version": "v1", "kind": "X"}]}}}`
	if _, err := writeStrictSchemas([]byte(spec), t.TempDir()); err == nil || !strings.Contains(err.Error(), "x-net-v1.json") {
		t.Fatalf("err = %v; want a collision on x-net-v1.json", err)
	}
}

// The validator the chart tests rely on must catch each class of mistake with
// the real kubeconform and the schemas generated from the pinned spec.
func TestKubeconformStrictAgainstPinnedSpec(t *testing.T) {
	ctx, kc := builtTool(t, 20*time.Minute, Kubeconform)
	loc, err := KubernetesSchemaLocation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"daemonset-apps-v1.json", "service-v1.json", "role-rbac-v1.json", "job-batch-v1.json", "networkpolicy-networking-v1.json"} {
		if _, err := os.Stat(filepath.Join(filepath.Dir(loc), f)); err != nil {
			t.Errorf("schema %s not generated: %v", f, err)
		}
	}
	const good = `apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  internalTrafficPolicy: Local
  selector: {app: x}
  ports: [{name: ws, port: 8080, targetPort: ws}, {name: health, port: 9090, targetPort: 9090}]
`
	run := func(manifest string) (string, bool) {
		cmd := exec.CommandContext(ctx, kc, "-strict", "-summary", "-output", "text",
			"-kubernetes-version", KubernetesVersion, "-schema-location", loc, "-")
		cmd.Stdin = strings.NewReader(manifest)
		out, err := cmd.CombinedOutput()
		return string(out), err == nil
	}
	if out, ok := run(good); !ok {
		t.Fatalf("valid Service rejected:\n%s", out)
	}
	for _, c := range []struct{ name, manifest, want string }{
		{"unknown field", strings.Replace(good, "internalTrafficPolicy: Local", "internalTrafficPolicy: Local\n  bogusField: 1", 1), "additional properties 'bogusField' not allowed"},
		{"wrong type", strings.Replace(good, "port: 8080", `port: "8080"`, 1), "/spec/ports/0/port"},
		{"missing required", strings.Replace(good, "{name: health, port: 9090, targetPort: 9090}", "{name: health, targetPort: 9090}", 1), "missing property 'port'"},
		{"int-or-string", strings.Replace(good, "targetPort: 9090", "targetPort: [9090]", 1), "/spec/ports/1/targetPort"},
		{"wrong kind", strings.Replace(good, "kind: Service", "kind: Servic", 1), "could not find schema"},
		{"wrong group", strings.Replace(good, "apiVersion: v1", "apiVersion: apps/v1", 1), "could not find schema"},
		{"duplicate key", strings.Replace(good, "metadata: {name: s}", "metadata: {name: s}\nmetadata: {name: t}", 1), "already set"},
	} {
		out, ok := run(c.manifest)
		if ok || !strings.Contains(out, c.want) {
			t.Errorf("%s: ok=%v, want rejection mentioning %q:\n%s", c.name, ok, c.want, out)
		}
	}
}
