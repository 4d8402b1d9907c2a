package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// backendBin is cmd/local-exec-backend, built once by TestMain.
var backendBin string

// backendProc is cmd/local-exec-backend in a process of its own, serving
// TLS. Both paths then reach the exec backend as every real client reaches
// a kubelet or an API server: across a process boundary, over TLS. A
// backend inside the benchmark's own process would hand the direct client
// wake-ups and connections no deployment has, and bill the proxy for them.
type backendProc struct {
	proc  *testenv.Proxy
	url   string // https://127.0.0.1:port
	caPEM []byte // signs its serving certificate
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
	p := testenv.StartBackendProcess(tb, testenv.ProxyOptions{
		Bin: backendBin,
		Args: []string{"--listen", "127.0.0.1:0", "--pods", podSpec, "--node-name", nodeName,
			"--tls-cert-file", certFile, "--tls-key-file", keyFile},
		KeepLines: 40,
	})
	return &backendProc{proc: p, url: "https://" + p.Addr, caPEM: ca.PEM}
}

// PIDs lists the backend's child processes: the commands it runs.
func (b *backendProc) PIDs() []int {
	parent := strconv.Itoa(b.proc.Process().Pid)
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
