package tools

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// kubeAPIServerBuild describes the kube-apiserver built from k8s.io/kubernetes.
// The version variables are the ones hack/lib/version.sh sets upstream: without
// them the server reports v0.0.0, its emulation version is wrong and Helm's
// kubeVersion checks against it fail.
func kubeAPIServerBuild() serverToolBuild {
	v := "v" + KubernetesVersion
	major, minor, _ := strings.Cut(KubernetesVersion, ".")
	minor, _, _ = strings.Cut(minor, ".")
	var ld []string
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		ld = append(ld,
			"-X", pkg+".gitVersion="+v,
			"-X", pkg+".gitMajor="+major,
			"-X", pkg+".gitMinor="+minor,
			"-X", pkg+".gitTreeState=clean",
			// A fixed date keeps the binary reproducible; nothing checks it.
			"-X", pkg+".buildDate=1970-01-01T00:00:00Z",
		)
	}
	return serverToolBuild{
		name:      "kube-apiserver",
		version:   v,
		moduleDir: filepath.Join("internal", "tools", "build", "kube-apiserver"),
		pkg:       "k8s.io/kubernetes/cmd/kube-apiserver",
		pinned:    "k8s.io/kubernetes " + v,
		ldflags:   strings.Join(append([]string{"-s", "-w"}, ld...), " "),
	}
}

// KubeAPIServer returns the path of a kube-apiserver binary at
// KubernetesVersion, building it into the repository's .cache/bin on first use.
// A cold build compiles most of k8s.io/kubernetes and takes minutes; callers
// should allow for that in their timeouts. Concurrent callers, in this process
// or in other test binaries, wait for a single build, which also builds
// kube-controller-manager and kube-scheduler (see controlPlane).
func KubeAPIServer(ctx context.Context) (string, error) {
	return controlPlane(ctx, 0)
}

// serverToolBuild is a binary built from a dedicated tools module under
// internal/tools/build, so that the main module's go.mod never carries the
// dependencies of the servers the tests run.
type serverToolBuild struct {
	name      string // binary name
	version   string // "v1.37.2"; part of the cache key and checked against the module
	moduleDir string // tools module, relative to the repository root (or absolute)
	pkg       string // main package to build inside that module
	pinned    string // "module version" that must appear in the tools module's go.mod
	ldflags   string
	binDir    string // cache directory; empty means <repository root>/.cache/bin
}

// strippedBuild is the stripped build of pkg from the tools module
// internal/tools/build/<dir>, whose go.mod must require module at version.
func strippedBuild(name, dir, module, version, pkg string) serverToolBuild {
	return serverToolBuild{
		name:      name,
		version:   version,
		moduleDir: filepath.Join("internal", "tools", "build", dir),
		pkg:       pkg,
		pinned:    module + " " + version,
		ldflags:   "-s -w",
	}
}

// serverToolBuilds counts completed builds, so a test can prove that
// concurrent callers share one.
var serverToolBuilds atomic.Int64

// ensure returns the cached binary, building it under an exclusive file lock
// when absent. The cache key covers the version, the tools module's go.mod and
// go.sum and the ldflags, so changing any pin rebuilds instead of silently
// reusing a stale binary.
func (b serverToolBuild) ensure(ctx context.Context) (string, error) {
	paths, err := ensureTogether(ctx, b)
	if err != nil {
		return "", err
	}
	return paths[0], nil
}

// ensureTogether is ensure for several main packages of one tools module with
// the same ldflags: the missing ones are built by a single `go build`, so the
// packages they share are compiled once (concurrent separate builds would each
// compile them: the build cache only serves what is already finished).
func ensureTogether(ctx context.Context, builds ...serverToolBuild) ([]string, error) {
	names := make([]string, len(builds))
	dsts := make([]string, len(builds))
	var modDir, binDir string
	for i, b := range builds {
		md, bd, err := b.dirs()
		if err != nil {
			return nil, err
		}
		if i > 0 && (md != modDir || bd != binDir || b.ldflags != builds[0].ldflags) {
			return nil, fmt.Errorf("%s and %s cannot be built together", builds[0].name, b.name)
		}
		if len(builds) > 1 && path.Base(b.pkg) != b.name {
			return nil, fmt.Errorf("%s: go build -o dir/ would name it %s", b.pkg, path.Base(b.pkg))
		}
		modDir, binDir = md, bd
		key, err := b.cacheKey(modDir)
		if err != nil {
			return nil, err
		}
		names[i] = b.name
		dsts[i] = filepath.Join(binDir, b.name+"-"+b.version+"-"+key, b.name)
	}
	missing := func() []int {
		var m []int
		for i, d := range dsts {
			if !isExecutable(d) {
				m = append(m, i)
			}
		}
		return m
	}
	if len(missing()) == 0 {
		return dsts, nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFile(ctx, filepath.Join(binDir, "."+strings.Join(names, "+")+".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another process may have finished the build while we waited.
	todo := missing()
	if len(todo) == 0 {
		return dsts, nil
	}
	tmp, err := os.MkdirTemp(binDir, ".build-"+names[0]+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, builds[todo[0]].name)
	var pkgs, built []string
	for _, i := range todo {
		pkgs = append(pkgs, builds[i].pkg)
		built = append(built, builds[i].name)
	}
	if len(todo) > 1 {
		out = tmp + string(filepath.Separator)
	}

	b0 := builds[todo[0]]
	slog.Info("building test tool; a cold build takes minutes", "tool", strings.Join(built, ","), "version", b0.version, "module", b0.moduleDir)
	start := time.Now()
	args := append([]string{"build", "-trimpath", "-gcflags", toolGCFlags, "-ldflags", b0.ldflags, "-o", out}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(),
		// A static binary, independent of the race-enabled, cgo test run
		// that triggers the build.
		"CGO_ENABLED=0",
		// The tools module must not join any go.work, nor fetch a newer
		// toolchain, nor edit its committed go.mod/go.sum.
		"GOWORK=off",
		"GOTOOLCHAIN=local",
		"GOFLAGS=-mod=readonly -buildvcs=false",
	)
	var log bytes.Buffer
	cmd.Stdout = &log
	cmd.Stderr = &log
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("building %s %s in %s: %w\n%s", strings.Join(built, ","), b0.version, b0.moduleDir, err, tail(log.Bytes(), 4000))
	}
	for _, i := range todo {
		if err := os.MkdirAll(filepath.Dir(dsts[i]), 0o755); err != nil {
			return nil, err
		}
		// The rename is atomic: a reader sees no binary or a complete one.
		if err := os.Rename(filepath.Join(tmp, builds[i].name), dsts[i]); err != nil {
			return nil, err
		}
	}
	serverToolBuilds.Add(1)
	slog.Info("built test tool", "tool", strings.Join(built, ","), "version", b0.version, "seconds", int(time.Since(start).Seconds()), "dir", binDir)
	return dsts, nil
}

// dirs resolves the tools module and the cache directory.
func (b serverToolBuild) dirs() (modDir, binDir string, err error) {
	modDir, binDir = b.moduleDir, b.binDir
	if !filepath.IsAbs(modDir) || binDir == "" {
		root, err := serverToolRepoRoot()
		if err != nil {
			return "", "", err
		}
		if !filepath.IsAbs(modDir) {
			modDir = filepath.Join(root, modDir)
		}
		if binDir == "" {
			binDir = filepath.Join(root, ".cache", "bin")
		}
	}
	return modDir, binDir, nil
}

func (b serverToolBuild) cacheKey(modDir string) (string, error) {
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(modDir, f))
		if f == "go.sum" && errors.Is(err, fs.ErrNotExist) {
			data, err = nil, nil // a module without dependencies has none
		}
		if err != nil {
			return "", fmt.Errorf("tools module for %s: %w", b.name, err)
		}
		if f == "go.mod" && b.pinned != "" && !goModRequires(data, b.pinned) {
			return "", fmt.Errorf("%s/go.mod does not require %s: update it together with the pinned version", b.moduleDir, b.pinned)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	fmt.Fprintf(h, "pkg %s\nldflags %s\n", b.pkg, b.ldflags)
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// goModRequires reports whether go.mod requires exactly "module version",
// in a require block or a single-line require.
func goModRequires(gomod []byte, pinned string) bool {
	for line := range strings.Lines(string(gomod)) {
		line, _, _ = strings.Cut(line, "//")
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "require" {
			f = f[1:]
		}
		if len(f) == 2 && f[0]+" "+f[1] == pinned {
			return true
		}
	}
	return false
}

// serverToolRepoRoot walks up from the working directory (a test's package
// directory) to the main module's go.mod, skipping the tools modules' own.
func serverToolRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePath(data) == "github.com/k8s-ws-proxy/k8s-ws-proxy" {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod of github.com/k8s-ws-proxy/k8s-ws-proxy) not found above the working directory")
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	for line := range strings.Lines(string(gomod)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// lockFile takes an exclusive flock, polling so that a cancelled context (a
// test timing out) stops the wait. The kernel drops the lock if the process
// dies, so a crashed build never wedges later runs.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-tick.C:
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return append([]byte("..."), b[len(b)-n:]...)
}
