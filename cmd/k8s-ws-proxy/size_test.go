package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// maxServeBytes bounds the stripped serve binary: 45 MB. Measured: 53.3 MB
// with the whole clientset, 46.8 MB with client-go's typed core/v1 and
// authorization/v1 clients (their scheme registers every API group), 29.6 MB
// on internal/kubeclient. `make size` runs the test.
const maxServeBytes = 45_000_000

func goCmd(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go %v: %v\n%s", args, err, stderr)
	}
	return string(out)
}

func TestServeBinarySize(t *testing.T) {
	out := filepath.Join(t.TempDir(), "k8s-ws-proxy")
	goCmd(t, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/k8s-ws-proxy")
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stripped serve binary: %d bytes (limit %d)", fi.Size(), maxServeBytes)
	if fi.Size() > maxServeBytes {
		t.Errorf("stripped serve binary is %d bytes, over the %d limit", fi.Size(), maxServeBytes)
	}
}

// deps lists the packages pkg links.
func deps(t *testing.T, pkg string) map[string]bool {
	t.Helper()
	m := map[string]bool{}
	for _, p := range strings.Fields(goCmd(t, "list", "-deps", pkg)) {
		m[p] = true
	}
	return m
}

const module = "github.com/k8s-ws-proxy/k8s-ws-proxy/"

// What the production binary and the proxy package must not link: the test
// backend, the clientset or any typed client (their scheme holds every API
// group: the binary size), and, for proxy, TLS reloading (cmd's business).
func TestDependencies(t *testing.T) {
	serve := deps(t, "./cmd/k8s-ws-proxy")
	for _, p := range []string{
		module + "internal/localexec", "k8s.io/client-go/kubernetes", "k8s.io/client-go/kubernetes/scheme",
		"k8s.io/cri-streaming/pkg/streaming/remotecommand",
	} {
		if serve[p] {
			t.Errorf("the serve binary links %s", p)
		}
	}
	proxy := deps(t, "./proxy")
	if proxy[module+"internal/tlsreload"] {
		t.Error("package proxy imports internal/tlsreload")
	}
	// The check can fail: the local backend's binary does link localexec.
	if !deps(t, "./cmd/local-exec-backend")[module+"internal/localexec"] {
		t.Error("go list -deps ./cmd/local-exec-backend lacks localexec: the check above proves nothing")
	}
}
