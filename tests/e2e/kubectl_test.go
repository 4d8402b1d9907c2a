package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/golang-jwt/jwt/v5"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// kubectlEnv is upstream kubectl (built from k8s.io/kubernetes at the
// pinned release) pointed at the proxy over TLS, as docs/kubectl.md tells a
// user to: the proxy's CA and a session token as the bearer token.
type kubectlEnv struct {
	*tlsEnv
	bin, caFile, home string
}

func startKubectlEnv(t *testing.T) *kubectlEnv {
	t.Helper()
	// A cold build compiles much of k8s.io/kubernetes; warm it is a stat.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()
	bin, err := tools.Kubectl(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ke := &kubectlEnv{tlsEnv: startTLSEnv(t, nil), bin: bin, home: t.TempDir()}
	ke.caFile = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ke.caFile, ke.servingCA.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return ke
}

// command is kubectl with the recipe's flags and args after them.
func (ke *kubectlEnv) command(ctx context.Context, token string, args ...string) *exec.Cmd {
	full := append([]string{"--server", "https://" + ke.Addr, "--certificate-authority", ke.caFile,
		"--token", token, "--namespace", testNamespace}, args...)
	cmd := exec.CommandContext(ctx, ke.bin, full...)
	// No kubeconfig, discovery cache or kuberc of the machine's user.
	cmd.Env = append(os.Environ(), "HOME="+ke.home, "KUBECONFIG="+filepath.Join(ke.home, "no-kubeconfig"), "KUBERC=off")
	return cmd
}

type kubectlResult struct {
	stdout, stderr string
	code           int
}

func (ke *kubectlEnv) run(t *testing.T, token string, stdin io.Reader, args ...string) kubectlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := ke.command(ctx, token, args...)
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	res := kubectlResult{stdout: out.String(), stderr: errOut.String()}
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		res.code = ee.ExitCode()
	default:
		t.Fatalf("kubectl %q: %v\nstderr: %s", args, err, errOut.String())
	}
	return res
}

// TestKubectlExecSplitStreams: stdout and stderr arrive apart and the exit
// code is kubectl's own.
func TestKubectlExecSplitStreams(t *testing.T) {
	ke := startKubectlEnv(t)
	script := "echo out; echo err >&2; exit 3"
	tok := ke.mint(ke.claims("sh", "-c", script))
	r := ke.run(t, tok, nil, "exec", testPod, "-c", testContainer, "--", "sh", "-c", script)
	if r.code != 3 || r.stdout != "out\n" || !strings.HasPrefix(r.stderr, "err\n") ||
		!strings.Contains(r.stderr, "command terminated with exit code 3") {
		t.Fatalf("kubectl exec: code %d, stdout %q, stderr %q; want 3, \"out\\n\", err then the exit code", r.code, r.stdout, r.stderr)
	}
	// The session was the token's one use.
	ke.WaitLog(10*time.Second, "session closed", func(m map[string]any) bool { return m["exit_code"] == float64(3) })
}

// TestKubectlExecStdin50MB: 50 MB through kubectl's stdin arrive whole. No
// -c: the proxy's pod answer names the token's container as the default.
func TestKubectlExecStdin50MB(t *testing.T) {
	ke := startKubectlEnv(t)
	c := ke.claims("sha256sum")
	c.Stdin = true
	tok := ke.mint(c)
	data := make([]byte, 50_000_000)
	rng := rand.NewChaCha8([32]byte{18})
	_, _ = rng.Read(data)
	sum := sha256.Sum256(data)
	r := ke.run(t, tok, bytes.NewReader(data), "exec", "-i", testPod, "--", "sha256sum")
	if r.code != 0 || r.stdout != hex.EncodeToString(sum[:])+"  -\n" {
		t.Fatalf("kubectl exec -i: code %d, stdout %q, stderr %q; want sha256 %x", r.code, r.stdout, r.stderr, sum)
	}
	if strings.Contains(r.stderr, "Defaulted container") {
		t.Errorf("kubectl guessed the container: %q", r.stderr)
	}
}

// TestKubectlExecTTY: kubectl -it under a pseudo-terminal passes its size
// and the exit code.
func TestKubectlExecTTY(t *testing.T) {
	ke := startKubectlEnv(t)
	script := "stty size; exit 7"
	c := ke.claims("sh", "-c", script)
	c.Stdin, c.TTY = true, true
	tok := ke.mint(c)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := ke.command(ctx, tok, "exec", "-it", testPod, "-c", testContainer, "--", "sh", "-c", script)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 33, Cols: 107})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	out, _ := io.ReadAll(tty) // until kubectl exits and the pty reports EIO
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("kubectl exec -it ended with %v, want exit code 7; output %q", err, out)
	}
	if !strings.Contains(string(out), "33 107") {
		t.Fatalf("kubectl exec -it output %q lacks the size 33 107", out)
	}
}

// TestKubectlAttach: kubectl attach -i to the container's entrypoint (a
// shell): input in, both output streams out, and a clean end when the shell
// exits (an attach reports no exit code: the API server's attach has none).
func TestKubectlAttach(t *testing.T) {
	ke := startKubectlEnv(t)
	c := ke.claims() // no command: attach
	c.Stdin = true
	tok := ke.mint(c)
	r := ke.run(t, tok, strings.NewReader("echo attached-$((6*7))\necho to-stderr >&2\nexit 0\n"),
		"attach", "-i", testPod, "-c", testContainer)
	if r.code != 0 || r.stdout != "attached-42\n" || !strings.Contains(r.stderr, "to-stderr\n") {
		t.Fatalf("kubectl attach: code %d, stdout %q, stderr %q; want 0, attached-42 on stdout, to-stderr on stderr", r.code, r.stdout, r.stderr)
	}
}

// TestKubectlRefusedToken: kubectl prints the proxy's reason and fails, for
// a token refused at kubectl's GET of the pod and for one refused at the
// upgrade (where client-go retries over SPDY and shows that answer).
func TestKubectlRefusedToken(t *testing.T) {
	ke := startKubectlEnv(t)
	used := ke.mint(ke.claims("id"))
	if r := ke.run(t, used, nil, "exec", testPod, "--", "id"); r.code != 0 || !strings.Contains(r.stdout, "uid=") {
		t.Fatalf("first use: code %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	expired := ke.claims("id")
	expired.IssuedAt = jwt.NewNumericDate(time.Now().Add(-3 * time.Minute))
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Minute))
	for _, tc := range []struct {
		name, token string
		command     []string
		want        string
	}{
		{"replayed", used, []string{"id"}, "error: You must be logged in to the server (session token rejected: replayed)"},
		{"expired", ke.mint(expired), []string{"id"}, "error: You must be logged in to the server (session token rejected: expired)"},
		{"another command", ke.mint(ke.claims("id")), []string{"cat", "/etc/shadow"}, "error: unable to upgrade connection: command in the query does not match the token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ke.run(t, tc.token, nil, append([]string{"exec", testPod, "--"}, tc.command...)...)
			if r.code == 0 || strings.TrimSpace(r.stderr) != tc.want || r.stdout != "" {
				t.Fatalf("kubectl: code %d, stdout %q, stderr %q; want a failure printing %q", r.code, r.stdout, r.stderr, tc.want)
			}
		})
	}
}

// TestKubectlExecCredentialPlugin is docs/kubectl.md's kubeconfig form: the
// CA in the kubeconfig and the token from an exec credential plugin.
func TestKubectlExecCredentialPlugin(t *testing.T) {
	ke := startKubectlEnv(t)
	tok := ke.mint(ke.claims("id", "-u"))
	dir := t.TempDir()
	cred := filepath.Join(dir, "credential.json")
	if err := os.WriteFile(cred, []byte(`{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"`+tok+`"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: proxy, cluster: {server: "https://`+ke.Addr+`", certificate-authority: "`+ke.caFile+`"}}]
users:
- name: session
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      interactiveMode: Never
      command: cat
      args: ["`+cred+`"]
contexts: [{name: proxy, context: {cluster: proxy, user: session, namespace: `+testNamespace+`}}]
current-context: proxy
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ke.bin, "exec", testPod, "--", "id", "-u")
	cmd.Env = append(os.Environ(), "HOME="+ke.home, "KUBECONFIG="+kubeconfig, "KUBERC=off")
	out, err := cmd.Output()
	if want := strconv.Itoa(os.Getuid()) + "\n"; err != nil || string(out) != want {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("kubectl with the plugin: %v, stdout %q (want %q), stderr %q", err, out, want, stderr)
	}
}
