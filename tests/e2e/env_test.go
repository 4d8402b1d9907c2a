// Package e2e runs the built k8s-ws-proxy binary against the local exec
// backend (the upstream kubelet streaming server running real processes)
// and drives it with the clients that matter: client-go's WebSocket
// executor and a client that behaves exactly as guacd does.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac/hmactest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/localexec"
)

// proxyBin is the k8s-ws-proxy binary under test, built once by TestMain
// with the race detector.
var proxyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "k8s-ws-proxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	proxyBin = filepath.Join(dir, "k8s-ws-proxy")
	args := []string{"build", "-o", proxyBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := osexec.Command("go", append(args, "github.com/k8s-ws-proxy/k8s-ws-proxy/cmd/k8s-ws-proxy")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building k8s-ws-proxy:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	testNamespace = "team-a"
	testPod       = "web-0"
	testContainer = "shell"
	testNode      = "node-1"
)

// env is one proxy process in front of one local exec backend.
type env struct {
	t         *testing.T
	backend   *localexec.Server
	keyDir    string
	key       []byte
	signer    *hmac.Signer
	addr      string // the proxy's session address
	health    string
	logs      *lockedBuffer
	cmd       *osexec.Cmd
	exited    chan struct{}
	exitState *os.ProcessState
	cutter    *cutter
}

type envOptions struct {
	transport string
	extraArgs []string
	// backendAddr points the proxy's kubeconfig somewhere else than the
	// backend (an unreachable API server).
	backendAddr string
	// viaCutter puts a cuttable TCP forwarder between proxy and backend.
	viaCutter bool
	// env is added to the proxy's environment.
	env []string
}

func startEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.transport == "" {
		o.transport = "auto"
	}
	e := &env{t: t, logs: &lockedBuffer{}, exited: make(chan struct{})}

	backend, err := localexec.NewServer(localexec.Config{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Pods: []localexec.Pod{{
		Namespace: testNamespace, Name: testPod, NodeName: testNode,
		Containers: []localexec.Container{{Name: testContainer}, {Name: "sidecar"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	e.backend = backend
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: backend}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close(); backend.Close() })

	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	apiAddr := ln.Addr().String()
	switch {
	case o.backendAddr != "":
		apiAddr = o.backendAddr
	case o.viaCutter:
		e.cutter = newCutter(t, apiAddr)
		apiAddr = e.cutter.ln.Addr().String()
	}
	writeKubeconfig(t, kubeconfig, "http://"+apiAddr)
	e.keyDir = filepath.Join(dir, "keys")
	e.key = bytes.Repeat([]byte("k"), 32)
	copy(e.key, []byte(t.Name()))
	hmactest.WriteSecretDir(t, e.keyDir, map[string][]byte{"key": e.key})
	e.signer, err = hmac.NewSigner(e.key)
	if err != nil {
		t.Fatal(err)
	}

	args := append([]string{"serve",
		"--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0",
		"--key-dir", e.keyDir, "--kubeconfig", kubeconfig,
		"--node-name", testNode, "--exec-transport", o.transport,
		"--shutdown-grace", "5s",
	}, o.extraArgs...)
	e.cmd = osexec.Command(proxyBin, args...)
	e.cmd.Env = append(os.Environ(), o.env...)
	stderr, err := e.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			e.logs.Write(append(append([]byte(nil), line...), '\n'))
			var m map[string]any
			if json.Unmarshal(line, &m) == nil && m["msg"] == "listening" {
				select {
				case listening <- m:
				default:
				}
			}
		}
	}()
	go func() {
		_ = e.cmd.Wait()
		e.exitState = e.cmd.ProcessState
		close(e.exited)
	}()
	t.Cleanup(e.stop)
	select {
	case m := <-listening:
		e.addr, _ = m["address"].(string)
		e.health, _ = m["health_address"].(string)
	case <-e.exited:
		t.Fatalf("proxy exited before listening; log:\n%s", e.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("proxy did not log 'listening' within 60s; log:\n%s", e.logs.String())
	}
	return e
}

func (e *env) stop() {
	defer func() {
		// The binary is built with -race: a race it found is a failure.
		if strings.Contains(e.logs.String(), "WARNING: DATA RACE") {
			e.t.Errorf("the proxy reported a data race:\n%s", e.logs.String())
		}
	}()
	select {
	case <-e.exited:
		return
	default:
	}
	_ = e.cmd.Process.Signal(os.Interrupt)
	select {
	case <-e.exited:
	case <-time.After(20 * time.Second):
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
}

// claims returns a valid claim set for the test pod; tweak before minting.
func (e *env) claims(command ...string) hmac.Claims {
	now := time.Now()
	return hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Audience:  jwt.ClaimStrings{hmac.DefaultAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)),
			ID:        hmac.NewID(),
			Subject:   "alice@example.com",
		},
		Namespace: testNamespace, Pod: testPod, Container: testContainer,
		Command: command, Node: testNode,
	}
}

func (e *env) mint(c hmac.Claims) string {
	e.t.Helper()
	tok, err := e.signer.Sign(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func writeKubeconfig(t *testing.T, path, server string) {
	t.Helper()
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s
contexts:
- name: local
  context:
    cluster: local
    user: proxy
users:
- name: proxy
  user:
    token: local-backend-ignores-this
current-context: local
`, server)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or the deadline passes. It is for
// conditions outside this process (another process's children), where no
// event can be waited on.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, within)
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
}

// lockedBuffer collects the proxy's log and wakes waiters on every line.
type lockedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) wait() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.changed
}

// waitLog waits for a log line with message msg for which match holds.
func (e *env) waitLog(within time.Duration, msg string, match func(map[string]any) bool) map[string]any {
	e.t.Helper()
	timeout := time.After(within)
	for {
		changed := e.logs.wait()
		for _, m := range e.logLines(msg) {
			if match == nil || match(m) {
				return m
			}
		}
		select {
		case <-changed:
		case <-timeout:
			e.t.Fatalf("no %q log line matching within %v; log:\n%s", msg, within, e.logs.String())
		}
	}
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// logLines returns the proxy's JSON log lines whose msg is msg.
func (e *env) logLines(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}
