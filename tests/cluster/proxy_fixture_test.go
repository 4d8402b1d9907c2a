package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac/hmactest"
)

// proxyProc is one `k8s-ws-proxy serve` process, authenticated to the API
// server as the chart's proxy ServiceAccount (bound to the chart's
// ClusterRole), on the workload's node.
type proxyProc struct {
	addr    string // session address, 127.0.0.1:port
	keyDir  string
	signer  *hmac.Signer
	logs    *logBuffer
	cmd     *osexec.Cmd
	exited  chan struct{}
	waitErr error
}

type proxyOptions struct {
	transport string   // --exec-transport; default auto
	extra     []string // more flags
}

func startProxy(t *testing.T, o proxyOptions) *proxyProc {
	t.Helper()
	if o.transport == "" {
		o.transport = "auto"
	}
	chartInstalled(t)
	workload(t)

	dir := t.TempDir()
	key := hmactest.NewKey(t)
	p := &proxyProc{keyDir: filepath.Join(dir, "keys"), logs: &logBuffer{}, exited: make(chan struct{})}
	hmactest.WriteSecretDir(t, p.keyDir, map[string][]byte{"key": key})
	var err error
	if p.signer, err = hmac.NewSigner(key); err != nil {
		t.Fatal(err)
	}
	kubeconfig := serviceAccountKubeconfig(t, releaseNamespace, proxyServiceAccount)
	args := append([]string{"serve",
		"--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0",
		"--key-dir", p.keyDir, "--kubeconfig", kubeconfig,
		"--node-name", workloadNode, "--exec-transport", o.transport,
		"--shutdown-grace", "5s",
	}, o.extra...)
	p.cmd = osexec.Command(proxyBin, args...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := append([]byte(nil), sc.Bytes()...)
			p.logs.add(line)
			var m map[string]any
			if json.Unmarshal(line, &m) == nil && m["msg"] == "listening" {
				addr, _ := m["address"].(string)
				select {
				case listening <- addr:
				default:
				}
			}
		}
	}()
	go func() {
		<-scanned // the pipe is drained before Wait closes it
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("proxy log:\n%s", p.logs.String())
		}
	})
	select {
	case p.addr = <-listening:
	case <-p.exited:
		t.Fatalf("proxy exited before listening: %v\n%s", p.waitErr, p.logs.String())
	case <-time.After(time.Minute):
		t.Fatalf("proxy did not log listening within a minute:\n%s", p.logs.String())
	}
	return p
}

// stop sends SIGTERM and waits for the drain, killing after a deadline.
func (p *proxyProc) stop(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("proxy did not exit within 30s of SIGTERM")
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// claims grants a session on the workload's container; empty command means
// attach. Tweak before minting.
func (p *proxyProc) claims(tty bool, command ...string) hmac.Claims {
	now := time.Now()
	return hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Audience:  jwt.ClaimStrings{hmac.DefaultAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)),
			ID:        hmac.NewID(),
			Subject:   "alice@example.com",
		},
		Namespace: workloadNamespace, Pod: workloadPod, Container: workloadContainer,
		Command: command, TTY: tty, Stdin: true, Node: workloadNode,
	}
}

func mint(t testing.TB, s *hmac.Signer, c hmac.Claims) string {
	t.Helper()
	tok, err := s.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// sessionsClosed returns the proxy's "session closed" log records so far.
func (p *proxyProc) sessionsClosed() []map[string]any {
	var out []map[string]any
	for _, line := range p.logs.lines() {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil && m["msg"] == "session closed" {
			out = append(out, m)
		}
	}
	return out
}

// waitLog waits until a log record satisfies match.
func (p *proxyProc) waitLog(t *testing.T, within time.Duration, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		ch := p.logs.changes()
		for _, line := range p.logs.lines() {
			var m map[string]any
			if json.Unmarshal(line, &m) == nil && match(m) {
				return m
			}
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("proxy never logged %s within %s", what, within)
		}
	}
}

// logBuffer holds the proxy's JSON log lines and wakes waiters on each.
type logBuffer struct {
	mu      sync.Mutex
	all     [][]byte
	changed chan struct{}
}

func (b *logBuffer) add(line []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all = append(b.all, line)
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
}

func (b *logBuffer) changes() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.changed
}

func (b *logBuffer) lines() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.all...)
}

func (b *logBuffer) String() string {
	var s strings.Builder
	for _, l := range b.lines() {
		s.Write(bytes.TrimSpace(l))
		s.WriteByte('\n')
	}
	return s.String()
}
