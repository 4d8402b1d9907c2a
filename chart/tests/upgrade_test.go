package tests

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// copyChart copies the chart to a temporary directory with its Chart.yaml
// version set to version.
func copyChart(t *testing.T, src, version string) string {
	t.Helper()
	return testenv.CopyChart(t, src, func(rel string, b []byte) ([]byte, error) {
		if rel != "Chart.yaml" {
			return b, nil
		}
		var meta map[string]any
		if err := yaml.Unmarshal(b, &meta); err != nil {
			return nil, err
		}
		meta["version"] = version
		return yaml.Marshal(meta)
	})
}

// TestChartVersionBumpKeepsPodTemplate: upgrading to a chart version that
// changes nothing else leaves the DaemonSet's pod template as it was, so
// the upgrade restarts no proxy and cuts no live terminal. (The image tag
// changes the pod anyway, and app.kubernetes.io/version follows it.)
func TestChartVersionBumpKeepsPodTemplate(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		for name, args := range map[string][]string{"minimal": minimalArgs, "full": fullArgs} {
			var templates []any
			for _, version := range []string{"0.1.0", "0.2.0-rc.1+build.7"} {
				hv := h
				hv.chart = copyChart(t, h.chart, version)
				ms := hv.mustRender(t, "proxy", "k8s-ws-proxy", args...)
				ds := ms.get(t, "DaemonSet", "k8s-ws-proxy")
				if !strings.Contains(string(ds.Raw), strings.ReplaceAll(version, "+", "_")) {
					t.Fatalf("%s: the DaemonSet's own labels do not name chart version %s; the test would prove nothing", name, version)
				}
				templates = append(templates, dig(ds.Obj, "spec", "template"))
			}
			if !reflect.DeepEqual(templates[0], templates[1]) {
				a, _ := yaml.Marshal(templates[0])
				b, _ := yaml.Marshal(templates[1])
				t.Fatalf("%s values: the pod template changes with the chart version:\n--- 0.1.0\n%s\n--- 0.2.0\n%s", name, a, b)
			}
		}
	})
}

// TestPriorityClassName: the value reaches the proxy's pod spec, and
// nothing is set without it.
func TestPriorityClassName(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		for value, want := range map[string]any{"": nil, "system-node-critical": "system-node-critical", "k8s-ws-proxy-high": "k8s-ws-proxy-high"} {
			args := slices.Clone(minimalArgs)
			if value != "" {
				args = append(args, "--set", "priorityClassName="+value)
			}
			ds := h.mustRender(t, "proxy", "k8s-ws-proxy", args...).get(t, "DaemonSet", "k8s-ws-proxy")
			if got := dig(ds.Obj, "spec", "template", "spec", "priorityClassName"); got != want {
				t.Errorf("priorityClassName=%q: pod spec has %v, want %v", value, got, want)
			}
		}
	})
}
