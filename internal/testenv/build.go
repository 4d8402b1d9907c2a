package testenv

import (
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"testing"
)

// BuildMode says how BuildProxy builds the binary.
type BuildMode int

const (
	// BuildAsTested adds -race exactly when the test binary has it: a race
	// in the proxy is then reported in its log, which Proxy checks.
	BuildAsTested BuildMode = iota
	// BuildRelease builds as `make build` does and never with -race, even
	// when the test binary is: measurements are about the product, and the
	// race detector multiplies its CPU and memory.
	BuildRelease
)

const (
	proxyPackage   = "github.com/k8s-ws-proxy/k8s-ws-proxy/cmd/k8s-ws-proxy"
	backendPackage = "github.com/k8s-ws-proxy/k8s-ws-proxy/cmd/local-exec-backend"
)

// BuildProxy builds cmd/k8s-ws-proxy into a new temporary directory. It is
// meant for TestMain, once per package: remove removes the directory.
// The go tool's output goes to this process's stderr.
func BuildProxy(mode BuildMode) (bin string, remove func(), err error) {
	return build(proxyPackage, mode)
}

// MainWithProxy is a package's TestMain: it builds the proxy as tested into
// *bin, runs the tests, removes the binary and exits with their status.
func MainWithProxy(m *testing.M, bin *string) {
	b, remove, err := BuildProxy(BuildAsTested)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = b
	code := m.Run()
	remove()
	os.Exit(code)
}

// BuildBackend builds cmd/local-exec-backend as BuildProxy builds the
// proxy.
func BuildBackend(mode BuildMode) (bin string, remove func(), err error) {
	return build(backendPackage, mode)
}

func build(pkg string, mode BuildMode) (bin string, remove func(), err error) {
	name := filepath.Base(pkg)
	dir, err := os.MkdirTemp("", name+"-test-")
	if err != nil {
		return "", nil, err
	}
	remove = func() { os.RemoveAll(dir) }
	bin = filepath.Join(dir, name)
	args := []string{"build", "-o", bin}
	var env []string
	switch mode {
	case BuildAsTested:
		if RaceEnabled {
			args = append(args, "-race")
		}
	case BuildRelease:
		args = append(args, "-trimpath", "-ldflags=-s -w")
		env = append(os.Environ(), "CGO_ENABLED=0")
	default:
		remove()
		return "", nil, fmt.Errorf("unknown build mode %d", mode)
	}
	cmd := osexec.Command("go", append(args, pkg)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		remove()
		return "", nil, fmt.Errorf("building %s: %w", name, err)
	}
	return bin, remove, nil
}

// BuildPackage builds any main package of this module (its import path)
// as BuildProxy builds the proxy, for tests' own helper binaries.
func BuildPackage(pkg string, mode BuildMode) (bin string, remove func(), err error) {
	return build(pkg, mode)
}
