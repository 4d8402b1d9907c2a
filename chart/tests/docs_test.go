package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// docs/chart.md documents every value of values.yaml: each key path appears
// as `path` in it, or a parent path does (free-form maps such as resources).
func TestEveryValueDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "chart.md"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("..", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	var missing []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for _, k := range sortedKeys(m) {
			path := prefix + k
			if strings.Contains(string(doc), "`"+path+"`") {
				continue
			}
			if sub, ok := m[k].(map[string]any); ok && len(sub) > 0 {
				walk(path+".", sub)
				continue
			}
			missing = append(missing, path)
		}
	}
	walk("", values)
	if len(missing) > 0 {
		t.Fatalf("values not documented in docs/chart.md: %v", missing)
	}
	if len(values) < 10 {
		t.Fatalf("parsed only %d top-level values", len(values))
	}
}
