package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const sampleValues = `# header
image:
  # Always an explicit registry host.
  registry: ghcr.io
  repository: k8s-ws-proxy/k8s-ws-proxy
  tag: ""
  digest: ""
  pullPolicy: IfNotPresent
bootstrap:
  image:
    tag: untouched
`

var want = map[string]string{"registry": "127.0.0.1:5000", "repository": "x/y", "tag": "v1.0.0", "digest": "sha256:" + strings.Repeat("0", 64)}

func TestSetImageValues(t *testing.T) {
	out, err := setImageValues([]byte(sampleValues), want)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Image     map[string]string
		Bootstrap struct{ Image map[string]string }
	}
	if err := yaml.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	for k, w := range want {
		if v.Image[k] != w {
			t.Errorf("image.%s = %q, want %q", k, v.Image[k], w)
		}
	}
	if v.Image["pullPolicy"] != "IfNotPresent" || v.Bootstrap.Image["tag"] != "untouched" {
		t.Errorf("edited more than image.{registry,repository,tag,digest}:\n%s", out)
	}
	if !strings.Contains(string(out), "# Always an explicit registry host.") {
		t.Error("comments lost")
	}
	if _, err := setImageValues([]byte("image:\n  tag: \"\"\n"), want); err == nil || !strings.Contains(err.Error(), "no image.") {
		t.Errorf("missing keys not reported: %v", err)
	}
}

// The repository's own chart pins, and a bad digest is refused.
func TestPinChart(t *testing.T) {
	out := filepath.Join(t.TempDir(), "c")
	d := "sha256:" + strings.Repeat("ab", 32)
	if err := pinChart(filepath.Join("..", "..", "..", "chart"), out, "127.0.0.1:5000/k8s-ws-proxy/k8s-ws-proxy", "v9.9.9", d); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "tests")); !os.IsNotExist(err) {
		t.Errorf("chart tests copied into the release chart: %v", err)
	}
	if err := pinChart(filepath.Join("..", "..", "..", "chart"), out+"2", "r.example/x", "v1", "sha256:nothex"); err == nil {
		t.Error("a malformed digest was accepted")
	}
}

func FuzzSetImageValues(f *testing.F) {
	f.Add(sampleValues)
	f.Add("image:\n  tag: x\n  registry: a\n  repository: b\n  digest: c\n")
	f.Add("image:\r\n  tag: x\r\n")
	f.Fuzz(func(t *testing.T, values string) {
		out, err := setImageValues([]byte(values), want)
		if err != nil {
			return
		}
		if !strings.Contains(string(out), `  tag: "v1.0.0"`) {
			t.Fatalf("succeeded without writing the tag:\n%s", out)
		}
	})
}
