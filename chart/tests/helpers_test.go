package tests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// buildTimeout bounds a cold build of a tool; warm runs find it cached.
const buildTimeout = 20 * time.Minute

// API versions a cluster with cert-manager and the Prometheus Operator
// advertises; passed to helm template for the fully-on render.
var optionalAPIs = []string{"--api-versions", "cert-manager.io/v1", "--api-versions", "monitoring.coreos.com/v1"}

var (
	helmOnce  = map[string]*sync.Once{}
	helmPath  = map[string]string{}
	helmErr   = map[string]error{}
	helmMu    sync.Mutex
	chartOnce sync.Once
	chartDir  string
)

func init() {
	for _, v := range tools.HelmVersions {
		helmOnce[v] = new(sync.Once)
	}
}

// helmBin returns the pinned helm of that version, building it once.
func helmBin(t *testing.T, version string) string {
	t.Helper()
	helmMu.Lock()
	once := helmOnce[version]
	helmMu.Unlock()
	once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		p, err := tools.Helm(ctx, version)
		helmMu.Lock()
		helmPath[version], helmErr[version] = p, err
		helmMu.Unlock()
	})
	helmMu.Lock()
	defer helmMu.Unlock()
	if helmErr[version] != nil {
		t.Fatalf("building helm %s: %v", version, helmErr[version])
	}
	return helmPath[version]
}

func chartPath(t *testing.T) string {
	t.Helper()
	chartOnce.Do(func() {
		d, err := filepath.Abs("..")
		if err != nil {
			panic(err)
		}
		chartDir = d
	})
	if _, err := os.Stat(filepath.Join(chartDir, "Chart.yaml")); err != nil {
		t.Fatalf("chart not found: %v", err)
	}
	return chartDir
}

// forEachHelm runs fn as a subtest per pinned helm version.
func forEachHelm(t *testing.T, fn func(t *testing.T, h helm)) {
	for _, v := range tools.HelmVersions {
		t.Run("helm-"+v, func(t *testing.T) {
			fn(t, helm{bin: helmBin(t, v), version: v, chart: chartPath(t)})
		})
	}
}

type helm struct {
	bin, version, chart string
}

// run executes helm with an isolated home (no repositories, plugins or
// registry logins of the developer leak in) and returns stdout and stderr.
func (h helm) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"HELM_NO_PLUGINS=1",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// template renders the chart as release in namespace, always for the pinned
// Kubernetes version so capability checks see what the real cluster has.
func (h helm) template(t *testing.T, release, namespace string, args ...string) (string, string, error) {
	t.Helper()
	all := append([]string{"template", release, h.chart, "--namespace", namespace,
		"--kube-version", tools.KubernetesVersion}, args...)
	return h.run(t, all...)
}

// mustRender renders and parses, failing the test on any error.
func (h helm) mustRender(t *testing.T, release, namespace string, args ...string) manifests {
	t.Helper()
	_, ms := h.mustRenderRaw(t, release, namespace, args...)
	return ms
}

// mustRenderRaw also returns helm's output verbatim.
func (h helm) mustRenderRaw(t *testing.T, release, namespace string, args ...string) (string, manifests) {
	t.Helper()
	out, stderr, err := h.template(t, release, namespace, args...)
	if err != nil {
		t.Fatalf("helm %s template %v: %v\n%s", h.version, args, err, stderr)
	}
	ms, err := parseManifests(out)
	if err != nil {
		t.Fatalf("parsing helm %s output: %v\n%s", h.version, err, out)
	}
	return out, ms
}

func testdata(name string) string { return filepath.Join("testdata", name) }

// manifest is one rendered object, kept both generic (for walking) and raw
// (for typed decoding and for the validator).
type manifest struct {
	Kind, Name, Namespace, APIVersion string
	Annotations                       map[string]string
	Obj                               map[string]any
	Raw                               []byte
}

func (m manifest) id() string { return m.Kind + "/" + m.Name }

type manifests []manifest

func (ms manifests) ids() []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.id())
	}
	sort.Strings(out)
	return out
}

func (ms manifests) get(t *testing.T, kind, name string) manifest {
	t.Helper()
	for _, m := range ms {
		if m.Kind == kind && m.Name == name {
			return m
		}
	}
	t.Fatalf("no %s/%s rendered; have %v", kind, name, ms.ids())
	return manifest{}
}

// decode strictly into a typed API object: a field the Go type does not have
// fails here too, independently of the OpenAPI validation.
func (m manifest) decode(t *testing.T, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(m.Raw, into); err != nil {
		t.Fatalf("decoding %s: %v\n%s", m.id(), err, m.Raw)
	}
}

func parseManifests(out string) (manifests, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	var ms manifests
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		var obj map[string]any
		if err := yaml.UnmarshalStrict(doc, &obj); err != nil {
			return nil, fmt.Errorf("%w in\n%s", err, doc)
		}
		if len(obj) == 0 {
			continue // a document holding only comments
		}
		md, _ := obj["metadata"].(map[string]any)
		m := manifest{Obj: obj, Raw: doc, Annotations: map[string]string{}}
		m.Kind, _ = obj["kind"].(string)
		m.APIVersion, _ = obj["apiVersion"].(string)
		m.Name, _ = md["name"].(string)
		m.Namespace, _ = md["namespace"].(string)
		if a, ok := md["annotations"].(map[string]any); ok {
			for k, v := range a {
				s, ok := v.(string)
				if !ok {
					return nil, fmt.Errorf("%s/%s: annotation %s is %T, not a string", m.Kind, m.Name, k, v)
				}
				m.Annotations[k] = s
			}
		}
		if m.Kind == "" || m.Name == "" || m.APIVersion == "" {
			return nil, fmt.Errorf("document without kind, apiVersion or name:\n%s", doc)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// podSpecs returns the pod spec of every workload (DaemonSet and Job here;
// Deployment and friends too should the chart ever grow one).
func podSpecs(ms manifests) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, m := range ms {
		var spec any = m.Obj["spec"]
		switch m.Kind {
		case "Pod":
		case "DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job":
			spec = dig(m.Obj, "spec", "template", "spec")
		case "CronJob":
			spec = dig(m.Obj, "spec", "jobTemplate", "spec", "template", "spec")
		default:
			continue
		}
		if s, ok := spec.(map[string]any); ok {
			out[m.id()] = s
		}
	}
	return out
}

func containersOf(pod map[string]any) []map[string]any {
	var out []map[string]any
	for _, key := range []string{"initContainers", "containers", "ephemeralContainers"} {
		list, _ := pod[key].([]any)
		for _, c := range list {
			if cm, ok := c.(map[string]any); ok {
				out = append(out, cm)
			}
		}
	}
	return out
}

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// allImages finds every "image" value under any containers list, however
// deep: a new workload kind cannot escape the image checks.
func allImages(v any) []string {
	var out []string
	var walk func(v any, inContainer bool)
	walk = func(v any, inContainer bool) {
		switch x := v.(type) {
		case map[string]any:
			for k, val := range x {
				if k == "image" && inContainer {
					if s, ok := val.(string); ok {
						out = append(out, s)
					}
				}
				walk(val, k == "containers" || k == "initContainers" || k == "ephemeralContainers")
			}
		case []any:
			for _, item := range x {
				walk(item, inContainer)
			}
		}
	}
	walk(v, false)
	return out
}

// registryHost returns the registry part of an image reference the way
// container runtimes decide it: the first path component counts as a host only
// if it has a dot or a port, or is localhost; otherwise docker.io is implied.
func registryHost(ref string) (string, bool) {
	first, _, found := strings.Cut(ref, "/")
	if !found {
		return "", false
	}
	if strings.ContainsAny(first, ".:") || first == "localhost" {
		return first, true
	}
	return "", false
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	return slices.Sorted(maps.Keys(m))
}
