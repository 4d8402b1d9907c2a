package tools

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestGoModRequires(t *testing.T) {
	gomod := []byte(`module example.com/x

go 1.26.0

require k8s.io/kubernetes v1.37.2

require (
	go.etcd.io/etcd/server/v3 v3.6.16 // indirect
	k8s.io/api v0.37.2
)
`)
	for _, tc := range []struct {
		pinned string
		want   bool
	}{
		{"k8s.io/kubernetes v1.37.2", true},
		{"go.etcd.io/etcd/server/v3 v3.6.16", true},
		{"k8s.io/api v0.37.2", true},
		{"k8s.io/kubernetes v1.37.1", false},
		{"k8s.io/kubernetes v1.37.20", false},
		{"k8s.io/apimachinery v0.37.2", false},
		{"example.com/x", false},
	} {
		if got := goModRequires(gomod, tc.pinned); got != tc.want {
			t.Errorf("goModRequires(%q) = %v, want %v", tc.pinned, got, tc.want)
		}
	}
	// Mentions that are not requirements do not count.
	for _, other := range []string{
		"// require k8s.io/kubernetes v1.37.2\n",
		"replace k8s.io/kubernetes => k8s.io/kubernetes v1.37.2\n",
		"exclude k8s.io/kubernetes v1.37.2\n",
	} {
		if goModRequires([]byte(other), "k8s.io/kubernetes v1.37.2") {
			t.Errorf("goModRequires found a requirement in %q", other)
		}
	}
}

// TestKubeAPIServerModulePinned keeps the tools module in step with
// KubernetesVersion: k8s.io/kubernetes at v1.X.Y and every staging module it
// replaces at the matching v0.X.Y, never a mix of releases.
func TestKubeAPIServerModulePinned(t *testing.T) {
	b := kubeAPIServerBuild()
	data := toolGoMod(t, b, "k8s.io/kubernetes v"+KubernetesVersion)
	checkStagingPinned(t, data, b.moduleDir)
	if !strings.Contains(b.ldflags, "k8s.io/component-base/version.gitVersion=v"+KubernetesVersion) {
		t.Errorf("ldflags %q do not set the component-base gitVersion", b.ldflags)
	}
}

func TestEtcdModulePinned(t *testing.T) {
	toolGoMod(t, etcdBuild(), "go.etcd.io/etcd/server/v3 v"+EtcdVersion)
}

// TestKubeAPIServerVersion builds (or reuses) the real binary and checks that
// it reports the pinned version, i.e. that the version ldflags took effect.
func TestKubeAPIServerVersion(t *testing.T) {
	ctx, bin := builtTool(t, 30*time.Minute, KubeAPIServer)
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "Kubernetes v"+KubernetesVersion; got != want {
		t.Errorf("kube-apiserver --version = %q, want %q", got, want)
	}
}

func TestEtcdVersion(t *testing.T) {
	ctx, bin := builtTool(t, 20*time.Minute, Etcd)
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	if !strings.Contains(string(out), "etcd Version: "+EtcdVersion+"\n") {
		t.Errorf("etcd --version = %q, want etcd Version: %s", out, EtcdVersion)
	}
}

// TestServerToolBuildConcurrent proves the cache discipline on a tiny module:
// concurrent callers get one build and the same complete binary, a second
// call reuses it, and a changed module gets a new cache entry.
func TestServerToolBuildConcurrent(t *testing.T) {
	defer goleak.VerifyNone(t)
	mod := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(mod, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/hello\n\ngo 1.26.0\n")
	write("main.go", "package main\n\nimport \"fmt\"\n\nvar greeting = \"unset\"\n\nfunc main() { fmt.Println(greeting) }\n")
	b := serverToolBuild{
		name:      "hello",
		version:   "v1.0.0",
		moduleDir: mod,
		pkg:       ".",
		pinned:    "",
		ldflags:   "-X main.greeting=pinned",
		binDir:    t.TempDir(),
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	before := serverToolBuilds.Load()
	const callers = 4
	paths := make([]string, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { paths[i], errs[i] = b.ensure(ctx) })
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if paths[i] != paths[0] {
			t.Fatalf("caller %d got %s, caller 0 got %s", i, paths[i], paths[0])
		}
	}
	if n := serverToolBuilds.Load() - before; n != 1 {
		t.Fatalf("%d builds for %d concurrent callers, want 1", n, callers)
	}
	out, err := exec.CommandContext(ctx, paths[0]).Output()
	if err != nil || string(out) != "pinned\n" {
		t.Fatalf("built binary printed %q, %v; want the ldflags value", out, err)
	}
	if left, _ := filepath.Glob(filepath.Join(b.binDir, ".build-*")); len(left) > 0 {
		t.Errorf("temporary build output left behind: %v", left)
	}

	again, err := b.ensure(ctx)
	if err != nil || again != paths[0] {
		t.Fatalf("second ensure = %s, %v; want cached %s", again, err, paths[0])
	}
	if n := serverToolBuilds.Load() - before; n != 1 {
		t.Fatalf("cached binary was rebuilt (%d builds)", n)
	}

	b.ldflags = "-X main.greeting=changed"
	changed, err := b.ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if changed == paths[0] {
		t.Fatalf("changed ldflags reused the cache entry %s", changed)
	}
	if out, err := exec.CommandContext(ctx, changed).Output(); err != nil || string(out) != "changed\n" {
		t.Fatalf("rebuilt binary printed %q, %v", out, err)
	}
}

// TestServerToolBuildTogether: main packages of one module are built by one
// go build (the control plane's way), and only the missing ones.
func TestServerToolBuildTogether(t *testing.T) {
	mod := t.TempDir()
	for name, body := range map[string]string{
		"go.mod":          "module example.com/pair\n\ngo 1.26.0\n",
		"cmd/one/main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"one\") }\n",
		"cmd/two/main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"two\") }\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(mod, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mod, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := t.TempDir()
	one := serverToolBuild{name: "one", version: "v1", moduleDir: mod, pkg: "example.com/pair/cmd/one", ldflags: "-s -w", binDir: bin}
	two := one
	two.name, two.pkg = "two", "example.com/pair/cmd/two"
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	before := serverToolBuilds.Load()
	paths, err := ensureTogether(ctx, one, two)
	if err != nil {
		t.Fatal(err)
	}
	if n := serverToolBuilds.Load() - before; n != 1 {
		t.Fatalf("%d builds for two packages, want 1", n)
	}
	for i, want := range []string{"one\n", "two\n"} {
		if out, err := exec.CommandContext(ctx, paths[i]).Output(); err != nil || string(out) != want {
			t.Fatalf("%s printed %q, %v; want %q", paths[i], out, err, want)
		}
	}
	// One missing: one more build, of it alone; the other is left as it was.
	st, _ := os.Stat(paths[0])
	if err := os.Remove(paths[1]); err != nil {
		t.Fatal(err)
	}
	again, err := ensureTogether(ctx, one, two)
	if err != nil || again[0] != paths[0] || again[1] != paths[1] {
		t.Fatalf("second ensureTogether = %v, %v; want %v", again, err, paths)
	}
	if n := serverToolBuilds.Load() - before; n != 2 {
		t.Fatalf("%d builds, want 2", n)
	}
	if st2, _ := os.Stat(paths[0]); !os.SameFile(st, st2) {
		t.Errorf("%s was rebuilt, though it was there", paths[0])
	}
	if out, err := exec.CommandContext(ctx, paths[1]).Output(); err != nil || string(out) != "two\n" {
		t.Fatalf("rebuilt %s printed %q, %v", paths[1], out, err)
	}
	// Packages whose binaries go build would not name as the tools are refused.
	odd := two
	odd.name = "other"
	if _, err := ensureTogether(ctx, one, odd); err == nil || !strings.Contains(err.Error(), "would name it two") {
		t.Fatalf("ensureTogether with a misnamed tool = %v", err)
	}
}

func TestServerToolBuildFailureReported(t *testing.T) {
	mod := t.TempDir()
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module example.com/broken\n\ngo 1.26.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mod, "main.go"), []byte("package main\n\nfunc main() { undefinedThing() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := serverToolBuild{name: "broken", version: "v0", moduleDir: mod, pkg: ".", binDir: t.TempDir()}
	_, err := b.ensure(t.Context())
	if err == nil || !strings.Contains(err.Error(), "undefinedThing") {
		t.Fatalf("ensure on a broken module = %v, want the compiler's message", err)
	}
	b.pinned = "example.com/dep v1.0.0"
	if _, err := b.ensure(t.Context()); err == nil || !strings.Contains(err.Error(), "does not require example.com/dep v1.0.0") {
		t.Fatalf("ensure with a missing pin = %v", err)
	}
}

func TestLockFileExclusive(t *testing.T) {
	defer goleak.VerifyNone(t)
	path := filepath.Join(t.TempDir(), "x.lock")
	unlock, err := lockFile(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	// A second holder must wait; with the first one held, a short deadline expires.
	short, cancel := context.WithTimeout(t.Context(), 600*time.Millisecond)
	defer cancel()
	if _, err := lockFile(short, path); err == nil {
		t.Fatal("second lockFile succeeded while the first holds the lock")
	}
	got := make(chan error, 1)
	go func() {
		u, err := lockFile(t.Context(), path)
		if err == nil {
			u()
		}
		got <- err
	}()
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter did not get the lock after it was released")
	}
}

// FuzzGoModRequires checks the go.mod line matcher on arbitrary input: it
// never panics, it finds a pin that is appended as a require line, and it
// never reports a pin whose module path does not occur in the file.
func FuzzGoModRequires(f *testing.F) {
	f.Add([]byte("module x\n\nrequire k8s.io/kubernetes v1.37.2\n"), "k8s.io/kubernetes", "v1.37.2")
	f.Add([]byte("require (\n\tgo.etcd.io/etcd/server/v3 v3.6.16 // indirect\n)\n"), "go.etcd.io/etcd/server/v3", "v3.6.16")
	f.Add([]byte("replace k8s.io/api => k8s.io/api v0.37.2\n"), "k8s.io/api", "v0.37.2")
	f.Add([]byte("// require a v1\n"), "a", "v1")
	f.Add([]byte{}, "", "")
	f.Fuzz(func(t *testing.T, gomod []byte, mod, version string) {
		pinned := mod + " " + version
		got := goModRequires(gomod, pinned)
		if got && !strings.Contains(string(gomod), mod) {
			t.Fatalf("reported %q in a go.mod that does not mention %q", pinned, mod)
		}
		// A well-formed pin appended as its own require line is found.
		if len(strings.Fields(mod)) == 1 && strings.Fields(mod)[0] == mod &&
			len(strings.Fields(version)) == 1 && strings.Fields(version)[0] == version &&
			!strings.Contains(pinned, "//") && mod != "require" {
			withPin := append(append(append([]byte(nil), gomod...), '\n'), "require "+pinned+"\n"...)
			if !goModRequires(withPin, pinned) {
				t.Fatalf("did not find appended pin %q", pinned)
			}
		}
	})
}
