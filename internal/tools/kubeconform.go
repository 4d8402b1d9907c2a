package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// KubeconformVersion is the pinned kubeconform, the validator that checks
// rendered manifests against the Kubernetes OpenAPI schemas.
const KubeconformVersion = "v0.8.0"

// Kubeconform returns the path of the pinned kubeconform binary, built with
// `go install` on first use and cached under .cache/bin.
func Kubeconform(ctx context.Context) (string, error) {
	return goTool{
		name: "kubeconform", pkg: "github.com/yannh/kubeconform/cmd/kubeconform",
		version: KubeconformVersion, ldflags: "-s -w",
	}.ensure(ctx)
}

// schemaGeneratorRevision names the output format of writeStrictSchemas; bump
// it whenever that function changes so cached schemas are regenerated.
const schemaGeneratorRevision = "3"

// KubernetesSchemaLocation returns a kubeconform -schema-location template
// resolving to strict JSON schemas for every kind of KubernetesVersion,
// generated offline from api/openapi-spec/swagger.json in the
// k8s.io/kubernetes module of that version (fetched from the Go module proxy,
// about 40 MB once) and cached under .cache/schemas/.
//
// Strict means: every object schema that lists properties rejects any other
// property (as the API server's strict field validation does), IntOrString
// accepts only an integer or a string, required fields are required, and
// apiVersion/kind must match the file's kind exactly. null is not accepted
// where the spec does not say so: a chart should not render nulls.
func KubernetesSchemaLocation(ctx context.Context) (string, error) {
	root, err := serverToolRepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, ".cache", "schemas", "kubernetes-"+KubernetesVersion+"-strict")
	want := "k8s.io/kubernetes@v" + KubernetesVersion + " rev " + schemaGeneratorRevision
	tmpl, unlock, err := openSchemaDir(ctx, dir, want)
	if err != nil || unlock == nil {
		return tmpl, err
	}
	defer unlock()

	modDir, err := goModDownloadDir(ctx, "k8s.io/kubernetes@v"+KubernetesVersion)
	if err != nil {
		return "", err
	}
	spec, err := os.ReadFile(filepath.Join(modDir, "api", "openapi-spec", "swagger.json"))
	if err != nil {
		return "", err
	}
	err = replaceStamped(dir, want, func(tmp string) error {
		_, err := writeStrictSchemas(spec, tmp)
		return err
	})
	if err != nil {
		return "", err
	}
	return tmpl, nil
}

// SchemaFileName is kubeconform's file name for a kind (its
// {{ .ResourceKind }}{{ .KindSuffix }}.json): the lower-cased kind, the first
// label of the group, and the version, e.g. "daemonset-apps-v1.json",
// "role-rbac-v1.json", "service-v1.json".
func SchemaFileName(group, version, kind string) string {
	name := strings.ToLower(kind)
	if group != "" {
		name += "-" + strings.ToLower(strings.Split(group, ".")[0])
	}
	return name + "-" + strings.ToLower(version) + ".json"
}

type gvk struct{ Group, Version, Kind string }

func (g gvk) apiVersion() string {
	if g.Group == "" {
		return g.Version
	}
	return g.Group + "/" + g.Version
}

// writeStrictSchemas writes one draft-4 JSON schema per top-level kind of a
// swagger 2.0 Kubernetes spec into dir and returns the file names. Each file
// carries the transitive closure of the definitions it references, under the
// same "#/definitions/..." pointers the spec uses, so recursive types need no
// inlining.
func writeStrictSchemas(spec []byte, dir string) ([]string, error) {
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(spec, &doc); err != nil {
		return nil, fmt.Errorf("parsing swagger.json: %w", err)
	}
	if len(doc.Definitions) == 0 {
		return nil, errors.New("swagger.json has no definitions")
	}
	strict := make(map[string]any, len(doc.Definitions))
	for name, def := range doc.Definitions {
		strict[name] = strictSchema(def)
	}

	owner := map[string]string{} // file name -> definition, to catch collisions
	var files []string
	for _, name := range slices.Sorted(maps.Keys(doc.Definitions)) {
		gvks := definitionGVKs(doc.Definitions[name])
		// Definitions valid under many kinds (DeleteOptions, WatchEvent) are
		// request/response envelopes, never manifests.
		if len(gvks) != 1 {
			continue
		}
		g := gvks[0]
		file := SchemaFileName(g.Group, g.Version, g.Kind)
		if prev, dup := owner[file]; dup {
			return nil, fmt.Errorf("schema file %s would hold both %s and %s", file, prev, name)
		}
		owner[file] = name

		closure := map[string]any{}
		if err := collectRefs(strict[name], strict, closure); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		closure[name] = strict[name]
		schema := map[string]any{
			"$schema": "http://json-schema.org/draft-04/schema#",
			"allOf":   []any{map[string]any{"$ref": "#/definitions/" + name}},
			// The kind's own definition already forbids unknown fields; pin
			// the type so a Role schema cannot pass a ClusterRole.
			"properties": map[string]any{
				"apiVersion": map[string]any{"enum": []any{g.apiVersion()}},
				"kind":       map[string]any{"enum": []any{g.Kind}},
			},
			"required":    []any{"apiVersion", "kind"},
			"definitions": closure,
		}
		out, err := json.Marshal(schema)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, file), out, 0o644); err != nil {
			return nil, err
		}
		files = append(files, file)
	}
	return files, nil
}

func definitionGVKs(def map[string]any) []gvk {
	list, _ := def["x-kubernetes-group-version-kind"].([]any)
	var out []gvk
	for _, item := range list {
		m, _ := item.(map[string]any)
		g, _ := m["group"].(string)
		v, _ := m["version"].(string)
		k, _ := m["kind"].(string)
		if v != "" && k != "" {
			out = append(out, gvk{g, v, k})
		}
	}
	return out
}

const refPrefix = "#/definitions/"

// collectRefs adds every definition reachable from node to closure.
func collectRefs(node any, all map[string]any, closure map[string]any) error {
	switch n := node.(type) {
	case map[string]any:
		if ref, ok := n["$ref"].(string); ok {
			name, found := strings.CutPrefix(ref, refPrefix)
			if !found {
				return fmt.Errorf("unsupported $ref %q", ref)
			}
			if _, seen := closure[name]; !seen {
				def, ok := all[name]
				if !ok {
					return fmt.Errorf("dangling $ref %q", ref)
				}
				closure[name] = def
				if err := collectRefs(def, all, closure); err != nil {
					return err
				}
			}
		}
		for _, v := range n {
			if err := collectRefs(v, all, closure); err != nil {
				return err
			}
		}
	case []any:
		for _, v := range n {
			if err := collectRefs(v, all, closure); err != nil {
				return err
			}
		}
	}
	return nil
}

// strictSchema returns a copy of an OpenAPI v2 schema object made strict for
// JSON Schema draft 4. It walks only schema positions (properties' values,
// items, additionalProperties, allOf/anyOf/oneOf/not), so a property that
// happens to be called "format" or "properties" is never mistaken for a
// keyword.
func strictSchema(s map[string]any) map[string]any {
	if f, _ := s["format"].(string); f == "int-or-string" {
		// swagger says {type: string, format: int-or-string}; both forms are
		// valid on the wire.
		return map[string]any{"oneOf": []any{
			map[string]any{"type": "string"},
			map[string]any{"type": "integer"},
		}}
	}
	out := make(map[string]any, len(s))
	for k, v := range s {
		switch k {
		case "description", "x-kubernetes-group-version-kind", "x-kubernetes-patch-strategy",
			"x-kubernetes-patch-merge-key", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
			"x-kubernetes-map-type", "x-kubernetes-unions", "x-kubernetes-validations":
			// Documentation and server-side merge hints: no effect on validity
			// here, and dropping them shrinks the files roughly tenfold.
		case "properties":
			props, _ := v.(map[string]any)
			np := make(map[string]any, len(props))
			for name, p := range props {
				np[name] = strictValue(p)
			}
			out[k] = np
		case "items", "additionalProperties", "not":
			out[k] = strictValue(v)
		case "allOf", "anyOf", "oneOf":
			list, _ := v.([]any)
			nl := make([]any, len(list))
			for i, item := range list {
				nl[i] = strictValue(item)
			}
			out[k] = nl
		default:
			out[k] = v
		}
	}
	_, hasProps := out["properties"]
	_, hasAdditional := out["additionalProperties"]
	preserve, _ := out["x-kubernetes-preserve-unknown-fields"].(bool)
	if hasProps && !hasAdditional && !preserve {
		out["additionalProperties"] = false
	}
	return out
}

// strictValue is strictSchema for a subschema; anything else (a bool
// additionalProperties, a tuple list, unused by Kubernetes) stays as it is.
func strictValue(v any) any {
	if m, ok := v.(map[string]any); ok {
		return strictSchema(m)
	}
	return v
}
