package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

const (
	// releaseName and releaseNamespace are where the chart is installed for
	// the proxy's tests. The chart names its objects k8s-ws-proxy whatever
	// the release, and its ClusterRoleBinding is cluster-wide, so there is
	// one installation per API server.
	releaseName      = "k8s-ws-proxy"
	releaseNamespace = "k8s-ws-proxy"
	// proxyServiceAccount is the chart's ServiceAccount for the DaemonSet.
	proxyServiceAccount = "k8s-ws-proxy"
	// fieldManager names this test suite in managedFields.
	fieldManager = "k8s-ws-proxy-e2e"
)

// repoRoot is the main module's directory, found from the package directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(data, []byte("module github.com/k8s-ws-proxy/k8s-ws-proxy\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repository root not found")
		}
		dir = parent
	}
}

// fullValues is the chart's fully-on values file, shared with its render
// tests: every optional object (TLS, cert-manager Certificates,
// NetworkPolicy, ServiceMonitor, the bootstrap hook) is rendered.
func fullValues(t testing.TB) string {
	return filepath.Join(repoRoot(t), "chart", "tests", "testdata", "values-full.yaml")
}

// renderChart runs the pinned helm's `template` (hooks included) for the
// cluster this API server is: KubernetesVersion, with the cert-manager and
// Prometheus Operator APIs that installCRDs provides.
func renderChart(t testing.TB, helmVersion, namespace string, extra ...string) []*unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	helm, err := tools.Helm(ctx, helmVersion)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"template", releaseName, filepath.Join(repoRoot(t), "chart"),
		"--namespace", namespace,
		"--kube-version", tools.KubernetesVersion,
		"--api-versions", "cert-manager.io/v1",
		"--api-versions", "monitoring.coreos.com/v1",
		"-f", fullValues(t),
	}, extra...)
	cmd := osexec.CommandContext(ctx, helm, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// helm must not find a kubeconfig or repository config of the host.
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "KUBECONFIG=/nonexistent")
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s template: %v\n%s", helmVersion, err, stderr.String())
	}
	objs, err := decodeManifests(stdout.Bytes())
	if err != nil {
		t.Fatalf("parsing helm %s output: %v", helmVersion, err)
	}
	return objs
}

func decodeManifests(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// pick returns the rendered object of that kind and name, failing if absent.
func pick(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o.DeepCopy()
		}
	}
	t.Fatalf("the chart rendered no %s %s", kind, name)
	return nil
}

// applier applies objects with server-side apply, as `kubectl apply
// --server-side` and Flux do, with strict field validation so an unknown or
// misspelt field is an error rather than silently dropped.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t testing.TB) *applier {
	t.Helper()
	cfg := api.AdminConfig()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(api.AdminClient().Discovery()))}
}

func (a *applier) resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		// A CRD registered since discovery was cached.
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return a.dyn.Resource(m.Resource).Namespace(obj.GetNamespace()), nil
	}
	return a.dyn.Resource(m.Resource), nil
}

func (a *applier) isNamespaced(obj *unstructured.Unstructured) bool {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	return err == nil && m.Scope.Name() == meta.RESTScopeNameNamespace
}

func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) (*unstructured.Unstructured, error) {
	ri, err := a.resource(obj)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(obj.Object)
	if err != nil {
		return nil, err
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: fieldManager, Force: &force, FieldValidation: metav1.FieldValidationStrict}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, opts)
}

func (a *applier) mustApply(t testing.TB, objs ...*unstructured.Unstructured) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, o := range objs {
		if _, err := a.apply(ctx, o, false); err != nil {
			t.Fatalf("applying %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

func (a *applier) delete(ctx context.Context, obj *unstructured.Unstructured) error {
	ri, err := a.resource(obj)
	if err != nil {
		return err
	}
	return ri.Delete(ctx, obj.GetName(), metav1.DeleteOptions{})
}

func ensureNamespace(t testing.TB, name string) {
	t.Helper()
	_, err := api.AdminClient().CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

var (
	crdsOnce sync.Once
	crdsErr  error
)

// installCRDs registers cert-manager's Certificate and the Prometheus
// Operator's ServiceMonitor, with the schemas the chart's render tests
// validate against (chart/tests/testdata/crd-schemas), so the API server
// rejects what those tests would. Strict draft-04 constructs are mapped to
// their structural-schema equivalents: "additionalProperties: false" is the
// CRD default (with strict field validation an unknown field is an error),
// and string-or-integer becomes x-kubernetes-int-or-string.
func installCRDs(t testing.TB) {
	t.Helper()
	crdsOnce.Do(func() { crdsErr = installCRDsOnce(repoRoot(t)) })
	if crdsErr != nil {
		t.Fatal(crdsErr)
	}
}

func installCRDsOnce(root string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(api.AdminConfig())
	if err != nil {
		return err
	}
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	for _, c := range []struct{ file, group, kind, plural string }{
		{"certificate-cert-manager-v1.json", "cert-manager.io", "Certificate", "certificates"},
		{"servicemonitor-monitoring-v1.json", "monitoring.coreos.com", "ServiceMonitor", "servicemonitors"},
	} {
		data, err := os.ReadFile(filepath.Join(root, "chart", "tests", "testdata", "crd-schemas", c.file))
		if err != nil {
			return err
		}
		var full map[string]any
		if err := json.Unmarshal(data, &full); err != nil {
			return fmt.Errorf("%s: %w", c.file, err)
		}
		props, _ := full["properties"].(map[string]any)
		spec, ok := props["spec"]
		if !ok {
			return fmt.Errorf("%s has no spec schema", c.file)
		}
		schemaSpec := structural(spec)
		top := map[string]any{"type": "object", "properties": map[string]any{"spec": schemaSpec}}
		if req, ok := full["required"].([]any); ok && contains(req, "spec") {
			top["required"] = []any{"spec"}
		}
		crd := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiextensions.k8s.io/v1",
			"kind":       "CustomResourceDefinition",
			"metadata":   map[string]any{"name": c.plural + "." + c.group},
			"spec": map[string]any{
				"group": c.group,
				"scope": "Namespaced",
				"names": map[string]any{"kind": c.kind, "listKind": c.kind + "List", "plural": c.plural, "singular": strings.ToLower(c.kind)},
				"versions": []any{map[string]any{
					"name": "v1", "served": true, "storage": true,
					"schema": map[string]any{"openAPIV3Schema": top},
				}},
			},
		}}
		if _, err := dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating CRD %s: %w", crd.GetName(), err)
		}
		if err := pollUntil(ctx, func() error {
			got, err := dyn.Resource(crdGVR).Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
			return fmt.Errorf("CRD %s not established yet", crd.GetName())
		}); err != nil {
			return err
		}
	}
	return nil
}

// structural converts a strict JSON schema (draft-04, as kubeconform uses) to
// a CRD structural schema that accepts and rejects the same objects.
func structural(v any) any {
	switch s := v.(type) {
	case map[string]any:
		if oneOf, ok := s["oneOf"].([]any); ok && isIntOrString(oneOf) {
			return map[string]any{"x-kubernetes-int-or-string": true}
		}
		out := map[string]any{}
		for k, val := range s {
			switch k {
			case "$schema":
			case "additionalProperties":
				if b, ok := val.(bool); ok && !b {
					continue // the structural default: unknown fields are rejected under strict validation
				}
				out[k] = structural(val)
			case "properties":
				props := map[string]any{}
				for name, p := range val.(map[string]any) {
					props[name] = structural(p)
				}
				out[k] = props
			default:
				out[k] = structural(val)
			}
		}
		if out["type"] == "object" && out["properties"] == nil && out["additionalProperties"] == nil {
			// An object without a schema for its fields (relabel configs):
			// free-form, as upstream's CRDs declare it.
			out["x-kubernetes-preserve-unknown-fields"] = true
		}
		return out
	case []any:
		out := make([]any, len(s))
		for i := range s {
			out[i] = structural(s[i])
		}
		return out
	}
	return v
}

func isIntOrString(oneOf []any) bool {
	types := map[any]bool{}
	for _, o := range oneOf {
		if m, ok := o.(map[string]any); ok {
			types[m["type"]] = true
		}
	}
	return len(oneOf) == 2 && types["string"] && types["integer"]
}

func contains(list []any, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

var (
	chartOnce sync.Once
	chartObjs []*unstructured.Unstructured
	chartErr  error
)

// chartInstalled applies the fully-on chart (hooks included) for real into
// releaseNamespace, once per run, and returns the rendered objects. Tests
// that need the proxy's or the hook's RBAC start here.
func chartInstalled(t testing.TB) []*unstructured.Unstructured {
	t.Helper()
	installCRDs(t)
	chartOnce.Do(func() {
		ensureNamespace(t, releaseNamespace)
		objs := renderChart(t, tools.HelmV3Version, releaseNamespace)
		a := newApplier(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, o := range objs {
			if _, err := a.apply(ctx, o, false); err != nil {
				chartErr = fmt.Errorf("applying %s %s: %w", o.GetKind(), o.GetName(), err)
				return
			}
		}
		chartObjs = objs
	})
	if chartErr != nil {
		t.Fatal(chartErr)
	}
	if chartObjs == nil {
		t.Fatal("chart installation failed in an earlier test")
	}
	out := make([]*unstructured.Unstructured, len(chartObjs))
	for i, o := range chartObjs {
		out[i] = o.DeepCopy()
	}
	return out
}

// pollUntil retries fn every 100ms until it succeeds or ctx ends. It is for
// state the API server applies asynchronously (CRD establishment, RBAC
// informer caches), where there is nothing to wait on.
func pollUntil(ctx context.Context, fn func() error) error {
	return pollEvery(ctx, 100*time.Millisecond, fn)
}
