package tools

import (
	"context"
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
