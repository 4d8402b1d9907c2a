package tools

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzWriteStrictSchemas feeds arbitrary documents to the swagger-to-schema
// converter: it must never panic, and every file it writes must be JSON whose
// $refs all resolve inside the file (the closure is complete).
func FuzzWriteStrictSchemas(f *testing.F) {
	f.Add([]byte(miniSpec))
	f.Add([]byte(`{"definitions": {"a": {"x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "A"}], "properties": {"b": {"$ref": "#/definitions/a"}}}}}`))
	f.Add([]byte(`{"definitions": {"a": {"x-kubernetes-group-version-kind": [{"version": "v1", "kind": "A"}], "items": [{"format": "int-or-string"}], "allOf": "x"}}}`))
	f.Add([]byte(`{"definitions": {"a": {"x-kubernetes-group-version-kind": [{"version": "v1", "kind": "A"}], "properties": {"b": {"$ref": "#/elsewhere"}}}}}`))
	f.Add([]byte(`{"definitions": []}`))
	f.Fuzz(func(t *testing.T, spec []byte) {
		dir := t.TempDir()
		files, err := writeStrictSchemas(spec, dir)
		if err != nil {
			return
		}
		for _, name := range files {
			raw, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Definitions map[string]any `json:"definitions"`
			}
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Fatalf("%s is not JSON: %v", name, err)
			}
			var check func(v any)
			check = func(v any) {
				switch x := v.(type) {
				case map[string]any:
					if ref, ok := x["$ref"].(string); ok {
						def, _ := strings.CutPrefix(ref, refPrefix)
						if _, ok := doc.Definitions[def]; !ok {
							t.Fatalf("%s: dangling %s", name, ref)
						}
					}
					for _, e := range x {
						check(e)
					}
				case []any:
					for _, e := range x {
						check(e)
					}
				}
			}
			check(doc.Definitions)
		}
	})
}
