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

// startBackend starts the backend with a serving certificate of its own
// CA, or with certPEM/keyPEM when given (a kubelet's, from the API
// server's kubelet CA); with clientCAPEM it requires client certificates
// signed by it, as a kubelet requires the API server's.
func startBackend(tb testing.TB, podSpec, nodeName string, certPEM, keyPEM, clientCAPEM []byte) *backendProc {
	tb.Helper()
	dir := tb.TempDir()
	var caPEM []byte
	if certPEM == nil {
		ca := testenv.NewCA(tb, "bench-backend")
		certPEM, keyPEM, _ = ca.Serving(tb)
		caPEM = ca.PEM
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	files := map[string][]byte{certFile: certPEM, keyFile: keyPEM}
	args := []string{"--listen", "127.0.0.1:0", "--pods", podSpec, "--node-name", nodeName,
		"--tls-cert-file", certFile, "--tls-key-file", keyFile}
	if clientCAPEM != nil {
		caFile := filepath.Join(dir, "client-ca.crt")
		files[caFile] = clientCAPEM
		args = append(args, "--client-ca-file", caFile)
	}
	for f, b := range files {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	p := testenv.StartBackendProcess(tb, testenv.ProxyOptions{Bin: backendBin, Args: args, KeepLines: 40})
	return &backendProc{proc: p, url: "https://" + p.Addr, caPEM: caPEM}
}

// child identifies one process the backend runs: a pid alone may be
// reused once its process is gone.
type child struct {
	pid   int
	start uint64 // starttime, clock ticks since boot
}

// children lists the backend's live child processes (the commands it
// runs; zombies excluded).
func (b *backendProc) children() map[child]bool { return childrenOf(b.proc.Process().Pid) }

// childrenOf lists the live child processes of pid.
func childrenOf(pid int) map[child]bool {
	parent := strconv.Itoa(pid)
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	out := map[child]bool{}
	for _, f := range stats {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ... starttime (field 22): comm may hold
		// spaces and parentheses.
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:]) // fields[0] is field 3, state
		if len(fields) < 20 || fields[1] != parent || fields[0] == "Z" {
			continue
		}
		pid, err1 := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		start, err2 := strconv.ParseUint(fields[19], 10, 64)
		if err1 == nil && err2 == nil {
			out[child{pid, start}] = true
		}
	}
	return out
}

// PIDs lists the backend's live child processes.
func (b *backendProc) PIDs() []int {
	var pids []int
	for c := range b.children() {
		pids = append(pids, c.pid)
	}
	return pids
}

// newChildren counts the processes in now that are not in before.
func newChildren(before, now map[child]bool) int {
	n := 0
	for c := range now {
		if !before[c] {
			n++
		}
	}
	return n
}
