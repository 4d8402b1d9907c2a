package bench

import (
	"bufio"
	"encoding/json"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/tests/testenv"
)

// backendBin is cmd/local-exec-backend, built once by TestMain.
var backendBin string

// backendProc is cmd/local-exec-backend in a process of its own, serving
// TLS. Both paths then reach the exec backend as every real client reaches
// a kubelet or an API server: across a process boundary, over TLS. A
// backend inside the benchmark's own process would hand the direct client
// wake-ups and connections no deployment has, and bill the proxy for them.
type backendProc struct {
	url   string // https://127.0.0.1:port
	caPEM []byte // signs its serving certificate
	cmd   *osexec.Cmd

	mu   sync.Mutex
	tail []string // its last log lines, for failures
}

func startBackend(tb testing.TB, podSpec, nodeName string) *backendProc {
	tb.Helper()
	dir := tb.TempDir()
	ca := testenv.NewCA(tb, "bench-backend")
	cert, key, _ := ca.Serving(tb)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for f, b := range map[string][]byte{certFile: cert, keyFile: key} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	b := &backendProc{caPEM: ca.PEM}
	b.cmd = osexec.Command(backendBin, "--listen", "127.0.0.1:0", "--pods", podSpec, "--node-name", nodeName,
		"--tls-cert-file", certFile, "--tls-key-file", keyFile)
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan struct{})
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			b.mu.Lock()
			b.tail = append(b.tail, line)
			if len(b.tail) > 40 {
				b.tail = b.tail[1:]
			}
			b.mu.Unlock()
			var m struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "listening" {
				listening <- m.Addr
			}
		}
		_ = b.cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = b.cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case addr := <-listening:
		b.url = "https://" + addr
	case <-exited:
		tb.Fatalf("local-exec-backend exited before listening:\n%s", b.log())
	case <-time.After(60 * time.Second):
		tb.Fatalf("local-exec-backend did not log 'listening' within 60s:\n%s", b.log())
	}
	return b
}

func (b *backendProc) log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.tail, "\n")
}

// PIDs lists the backend's child processes: the commands it runs.
func (b *backendProc) PIDs() []int {
	parent := strconv.Itoa(b.cmd.Process.Pid)
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var pids []int
	for _, f := range stats {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		if fields := strings.Fields(s[i+1:]); len(fields) > 1 && fields[1] == parent {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
