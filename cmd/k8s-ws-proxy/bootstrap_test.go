package main

import (
	"bytes"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeconfig"
)

func runBootstrapCmd(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer // stdout and stderr
	code := bootstrapSecret(args, &out, &out, func(k string) string { return env[k] })
	return code, out.String()
}

// closedKubeconfig writes a kubeconfig whose server is a loopback port that
// nothing listens on.
func closedKubeconfig(t *testing.T) (string, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := kubeconfig.Write(path, &rest.Config{Host: "http://" + addr, BearerToken: "not-a-secret"}); err != nil {
		t.Fatal(err)
	}
	return path, addr
}

func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

func TestBootstrapSecretUsage(t *testing.T) {
	if code, out := runBootstrapCmd(t, nil, "--help"); code != 0 || !strings.Contains(out, "--secret-name") {
		t.Fatalf("--help: %d %q", code, out)
	}
	if code, _ := runBootstrapCmd(t, nil, "--no-such-flag"); code != 2 {
		t.Fatalf("unknown flag: exit %d", code)
	}
	if code, _ := runBootstrapCmd(t, nil, "--namespace", "a", "extra"); code != 2 {
		t.Fatalf("stray argument: exit %d", code)
	}
	code, out := runBootstrapCmd(t, nil)
	if code != 2 || !strings.Contains(out, "POD_NAMESPACE") {
		t.Fatalf("no namespace: exit %d %q", code, out)
	}
	jsonLines(t, out)
}

func TestBootstrapSecretNotInCluster(t *testing.T) {
	// rest.InClusterConfig reads these; empty means "not in a pod" even when
	// the tests themselves run in one.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	code, out := runBootstrapCmd(t, map[string]string{"POD_NAMESPACE": "ns1"})
	if code != 1 || !strings.Contains(out, "not running in a pod and no --kubeconfig") {
		t.Fatalf("exit %d %q", code, out)
	}
}

func TestBootstrapSecretUnreachable(t *testing.T) {
	kubeconfig, addr := closedKubeconfig(t)
	code, out := runBootstrapCmd(t, map[string]string{"POD_NAMESPACE": "ns1"},
		"--kubeconfig", kubeconfig, "--attempts", "2", "--secret-name", "s1")
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	lines := jsonLines(t, out)
	last := lines[len(lines)-1]
	msg, _ := last["msg"].(string)
	if last["level"] != "ERROR" || last["kind"] != "unreachable" || !strings.Contains(msg, "cannot reach") ||
		!strings.Contains(msg, addr) || !strings.Contains(msg, "ns1/s1") {
		t.Fatalf("last line %v", last)
	}
	if strings.Contains(out, "not-a-secret") {
		t.Fatal("the credential reached the log")
	}
}
