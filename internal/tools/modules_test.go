package tools

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// toolGoMod is the go.mod of b's tools module, checked to require each of
// pinned ("module version").
func toolGoMod(t *testing.T, b serverToolBuild, pinned ...string) []byte {
	t.Helper()
	root, err := serverToolRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, b.moduleDir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pinned {
		if !goModRequires(data, p) {
			t.Errorf("%s/go.mod does not require %s", b.moduleDir, p)
		}
	}
	return data
}

// checkStagingPinned: every staging module k8s.io/kubernetes replaces at
// KubernetesVersion's v0.X.Y, never a mix of releases.
func checkStagingPinned(t *testing.T, data []byte, moduleDir string) {
	t.Helper()
	staging := "v0." + strings.SplitN(KubernetesVersion, ".", 2)[1]
	replaces := 0
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) == 4 && f[1] == "=>" {
			replaces++
			if f[0] != f[2] || f[3] != staging || !strings.HasPrefix(f[0], "k8s.io/") {
				t.Errorf("replace %q: want %s => %s %s", strings.TrimSpace(line), f[0], f[0], staging)
			}
		}
	}
	// k8s.io/kubernetes v1.37 has 33 staging modules; a lost replace would
	// fail the build with an unknown v0.0.0, a silently dropped block here.
	if replaces < 30 {
		t.Errorf("found %d staging replaces in %s/go.mod, want all of them (>= 30)", replaces, moduleDir)
	}
}

// builtTool builds (or reuses) a tool within limit, a cold build's worst
// case, and returns its path and a context bounded the same way.
func builtTool(t *testing.T, limit time.Duration, build func(context.Context) (string, error)) (context.Context, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	t.Cleanup(cancel)
	bin, err := build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, bin
}
