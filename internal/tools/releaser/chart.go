package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"sigs.k8s.io/yaml"
)

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func pinChartCmd(args []string) error {
	fs := flag.NewFlagSet("pin-chart", flag.ExitOnError)
	chartDir := fs.String("chart", "chart", "chart directory")
	out := fs.String("out", "", "directory to write the pinned copy of the chart to (must not exist)")
	image := fs.String("image", "", "image repository, REGISTRY/REPO (no tag)")
	tag := fs.String("tag", "", "image tag the chart is released with")
	digest := fs.String("digest", "", "image index digest, sha256:...")
	_ = fs.Parse(args)
	if *out == "" || *image == "" || *tag == "" {
		return errors.New("pin-chart: -out, -image and -tag are required")
	}
	return pinChart(*chartDir, *out, *image, *tag, *digest)
}

// pinChart copies the chart and sets image.registry/repository/tag/digest in
// the copy's values.yaml, so `helm install` of the released chart runs
// exactly the released image without any --set. The edit is textual (the
// comments in values.yaml are the chart's documentation) and checked by
// parsing the result.
func pinChart(chartDir, out, image, tag, digest string) error {
	repo, err := name.NewRepository(image, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("image %q: %w", image, err)
	}
	if digest != "" && !digestRE.MatchString(digest) {
		return fmt.Errorf("digest %q is not sha256:<64 hex>", digest)
	}
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("%s exists", out)
	}
	if err := copyTree(chartDir, out); err != nil {
		return err
	}
	valuesPath := filepath.Join(out, "values.yaml")
	raw, err := os.ReadFile(valuesPath)
	if err != nil {
		return err
	}
	want := map[string]string{
		"registry":   repo.RegistryStr(),
		"repository": repo.RepositoryStr(),
		"tag":        tag,
		"digest":     digest,
	}
	edited, err := setImageValues(raw, want)
	if err != nil {
		return fmt.Errorf("%s: %w", valuesPath, err)
	}
	var v struct {
		Image map[string]any `json:"image"`
	}
	if err := yaml.Unmarshal(edited, &v); err != nil {
		return fmt.Errorf("pinned values.yaml no longer parses: %w", err)
	}
	for k, w := range want {
		if got, _ := v.Image[k].(string); got != w {
			return fmt.Errorf("pinned values.yaml has image.%s=%q, want %q", k, got, w)
		}
	}
	return os.WriteFile(valuesPath, edited, 0o644)
}

// setImageValues rewrites the scalar keys of the top-level image: block.
func setImageValues(values []byte, want map[string]string) ([]byte, error) {
	lines := strings.SplitAfter(string(values), "\n")
	inImage := false
	seen := map[string]bool{}
	for i, l := range lines {
		trimmed := strings.TrimRight(l, "\r\n")
		if trimmed == "image:" {
			inImage = true
			continue
		}
		if inImage && trimmed != "" && !strings.HasPrefix(trimmed, " ") && !strings.HasPrefix(trimmed, "#") {
			break // the next top-level key
		}
		if !inImage {
			continue
		}
		body := strings.TrimLeft(trimmed, " ")
		indent := trimmed[:len(trimmed)-len(body)]
		if indent != "  " {
			continue
		}
		key, _, ok := strings.Cut(body, ":")
		w, managed := want[key]
		if !ok || !managed {
			continue
		}
		lines[i] = fmt.Sprintf("%s%s: %q\n", indent, key, w)
		seen[key] = true
	}
	for k := range want {
		if !seen[k] {
			return nil, fmt.Errorf("no image.%s key to pin", k)
		}
	}
	return []byte(strings.Join(lines, "")), nil
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			// chart/tests holds the chart's Go tests; .helmignore keeps them
			// out of the package, and a copy has no use for them either.
			if rel == "tests" {
				return filepath.SkipDir
			}
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}

// chartMeta reads name and version of a chart's Chart.yaml.
func chartMeta(chartDir string) (nameVal, version string, err error) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", "", err
	}
	var c struct{ Name, Version string }
	if err := yaml.Unmarshal(bytes.TrimSpace(raw), &c); err != nil {
		return "", "", err
	}
	return c.Name, c.Version, nil
}
