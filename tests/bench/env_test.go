package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/klog/v2"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac/hmactest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/localexec"
)

// proxyBin is the k8s-ws-proxy binary measured, built once by TestMain.
var proxyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "k8s-ws-proxy-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	proxyBin = filepath.Join(dir, "k8s-ws-proxy")
	// Never with -race, even when this test binary is: the numbers are
	// about the product, and the race detector multiplies its CPU and
	// memory. Built as `make build` builds it.
	build := osexec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", proxyBin,
		"github.com/k8s-ws-proxy/k8s-ws-proxy/cmd/k8s-ws-proxy")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building k8s-ws-proxy:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// client-go logs every stream a cancelled session leaves behind
	// ("Copying stdin failed", ...); sessions here end that way by design,
	// and failures reach the tests as errors.
	klog.SetLogger(logr.Discard())
	code := m.Run()
	results.print(os.Stdout)
	os.RemoveAll(dir)
	if code == 0 {
		if err := findLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// findLeaks is goleak.Find with a longer patience: client-go's WebSocket
// heartbeat goroutine notices its closed connection only at its next
// 5-second tick.
func findLeaks() error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		// klog starts its flush daemon in init; it lives for the process.
		err := goleak.Find(goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

const (
	benchNamespace = "bench"
	benchPod       = "bench-0"
	benchContainer = "main"
	benchNode      = "bench-node"
)

// env is one local exec backend, the direct exec client toward it, and the
// key material proxies in front of it use.
type env struct {
	backend    *localexec.Server
	backendURL string
	// transport is what package exec's auto mode ends up using against the
	// backend (SPDY: localexec, like a kubelet, has no v5). The direct path
	// is forced to it, so that it does not pay auto's refused WebSocket
	// attempt on every session; proxies are started with it for the same
	// reason.
	transport  exec.Transport
	direct     *exec.Dialer
	signer     *hmac.Signer
	keyDir     string
	kubeconfig string
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	backend, err := localexec.NewServer(localexec.Config{
		Logger: slog.New(slog.DiscardHandler),
		Pods: []localexec.Pod{{
			Namespace: benchNamespace, Name: benchPod, NodeName: benchNode,
			Containers: []localexec.Container{{Name: benchContainer}},
		}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	hs := &http.Server{Handler: backend, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(ln)
	}()
	tb.Cleanup(func() {
		backend.Close()
		hs.Close()
		<-served
	})
	e := &env{backend: backend, backendURL: "http://" + ln.Addr().String()}

	dir := tb.TempDir()
	e.kubeconfig = filepath.Join(dir, "kubeconfig")
	writeKubeconfig(tb, e.kubeconfig, e.backendURL)
	e.keyDir = filepath.Join(dir, "keys")
	key := hmactest.NewKey(tb)
	hmactest.WriteSecretDir(tb, e.keyDir, map[string][]byte{"key": key})
	if e.signer, err = hmac.NewSigner(key); err != nil {
		tb.Fatal(err)
	}

	cfg := &rest.Config{Host: e.backendURL}
	auto, err := exec.NewDialer(cfg, exec.TransportAuto)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := auto.Stream(ctx, e.target(session{Command: []string{"true"}}), exec.Streams{Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		tb.Fatalf("direct exec in auto mode: %v", err)
	}
	e.transport = res.Transport
	if e.direct, err = exec.NewDialer(cfg, e.transport); err != nil {
		tb.Fatal(err)
	}
	return e
}

func writeKubeconfig(tb testing.TB, path, server string) {
	tb.Helper()
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
		tb.Fatal(err)
	}
}

// session is one exec as a benchmark runs it; the same value runs on
// either path.
type session struct {
	Command []string
	TTY     bool
	Stdin   io.Reader // nil: no stdin
	Stdout  io.Writer
	Stderr  io.Writer // without TTY; nil discards
	Sizes   remotecommand.TerminalSizeQueue
}

func (e *env) target(s session) exec.Target {
	return exec.Target{
		Namespace: benchNamespace, Pod: benchPod, Container: benchContainer,
		Command: s.Command, TTY: s.TTY, Stdin: s.Stdin != nil, Stdout: true, Stderr: !s.TTY,
	}
}

// path carries sessions to the backend. prepare does the client's work
// that precedes a connection (minting a token, building an executor), so
// that timers can start at the dial.
type path interface {
	name() string
	prepare(s session) (run func(ctx context.Context) error, err error)
}

type directPath struct{ e *env }

func (d directPath) name() string { return "direct" }

func (d directPath) prepare(s session) (func(context.Context) error, error) {
	st := exec.Streams{Stdin: s.Stdin, Stdout: s.Stdout, Stderr: s.Stderr, Sizes: s.Sizes}
	if st.Stderr == nil {
		st.Stderr = io.Discard
	}
	t := d.e.target(s)
	return func(ctx context.Context) error {
		_, err := d.e.direct.Stream(ctx, t, st)
		return err
	}, nil
}

// proxyProc is one k8s-ws-proxy process in front of an env's backend.
type proxyProc struct {
	addr, health string
	transport    exec.Transport
	cmd          *osexec.Cmd
	exited       chan struct{}
	logTail      *tail
}

// startProxy starts the binary toward e's backend with the given exec
// transport and waits for its "listening" line.
func (e *env) startProxy(tb testing.TB, transport exec.Transport, extraArgs ...string) *proxyProc {
	tb.Helper()
	p := &proxyProc{transport: transport, exited: make(chan struct{}), logTail: &tail{max: 40}}
	args := append([]string{"serve",
		"--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0",
		"--key-dir", e.keyDir, "--kubeconfig", e.kubeconfig,
		"--node-name", benchNode, "--exec-transport", string(transport),
		"--shutdown-grace", "2s", "--max-sessions", "4096",
	}, extraArgs...)
	p.cmd = osexec.Command(proxyBin, args...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	listening := make(chan map[string]any, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Bytes()
			// Only the last lines are kept: a load run logs two audit
			// lines per session.
			p.logTail.add(string(line))
			if found {
				continue
			}
			var m map[string]any
			if json.Unmarshal(line, &m) == nil && m["msg"] == "listening" {
				found = true
				listening <- m
			}
		}
	}()
	go func() {
		<-scanned // Wait must not close the pipe before it is drained
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	tb.Cleanup(p.stop)
	select {
	case m := <-listening:
		p.addr, _ = m["address"].(string)
		p.health, _ = m["health_address"].(string)
	case <-p.exited:
		tb.Fatalf("proxy exited before listening; log:\n%s", p.logTail)
	case <-time.After(60 * time.Second):
		tb.Fatalf("proxy did not log 'listening' within 60s; log:\n%s", p.logTail)
	}
	if p.addr == "" || p.health == "" {
		tb.Fatalf("listening line without address or health_address; log:\n%s", p.logTail)
	}
	return p
}

func (p *proxyProc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// rssKiB is the proxy's resident set (VmRSS) in KiB.
func (p *proxyProc) rssKiB() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS line")
}

// fds is how many file descriptors the proxy holds open.
func (p *proxyProc) fds() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	return len(ents), err
}

// metricsClient keeps no idle connection, so that polling leaves no
// goroutine behind in this process.
var metricsClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// goroutines reads go_goroutines from the proxy's /metrics.
func (p *proxyProc) goroutines() (int, error) {
	v, err := p.metric("go_goroutines")
	return int(v), err
}

// metric reads a sample from the proxy's /metrics: the first series of
// that name, whatever its labels (the OpenTelemetry exporter adds scope
// labels to every series).
func (p *proxyProc) metric(name string) (float64, error) {
	resp, err := metricsClient.Get("http://" + p.health + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			return strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/metrics has no %s", name)
}

// waitGoroutines polls the proxy until it runs at most want goroutines:
// sessions end asynchronously in another process, so there is no event to
// wait on. A /metrics request that fails meanwhile (a proxy tearing down a
// thousand sessions on a busy machine can take seconds to answer) is
// retried until the deadline. It returns the last count read.
func (p *proxyProc) waitGoroutines(want int, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	last, lastErr := -1, error(nil)
	for {
		n, err := p.goroutines()
		if err == nil {
			last, lastErr = n, nil
			if n <= want {
				return n, nil
			}
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			if last < 0 {
				return 0, lastErr
			}
			return last, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type proxyPath struct {
	e *env
	p *proxyProc
}

func (p *proxyProc) path(e *env) proxyPath { return proxyPath{e: e, p: p} }

func (pp proxyPath) name() string { return "proxy" }

func (pp proxyPath) prepare(s session) (func(context.Context) error, error) {
	now := time.Now()
	c := hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Audience:  jwt.ClaimStrings{hmac.DefaultAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)),
			ID:        hmac.NewID(),
			Subject:   "bench@example.com",
		},
		Namespace: benchNamespace, Pod: benchPod, Container: benchContainer,
		Command: s.Command, Node: benchNode, TTY: s.TTY, Stdin: s.Stdin != nil,
	}
	tok, err := pp.e.signer.Sign(c)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	for _, a := range s.Command {
		q.Add("command", a)
	}
	q.Set("container", benchContainer)
	q.Set("stdin", strconv.FormatBool(s.Stdin != nil))
	q.Set("stdout", "true")
	q.Set("stderr", strconv.FormatBool(!s.TTY))
	q.Set("tty", strconv.FormatBool(s.TTY))
	u := fmt.Sprintf("http://%s/api/v1/namespaces/%s/pods/%s/exec?%s", pp.p.addr, benchNamespace, benchPod, q.Encode())
	ex, err := remotecommand.NewWebSocketExecutorForProtocols(&rest.Config{Host: "http://" + pp.p.addr, BearerToken: tok},
		"GET", u, "v5.channel.k8s.io", "v4.channel.k8s.io")
	if err != nil {
		return nil, err
	}
	opts := remotecommand.StreamOptions{Stdin: s.Stdin, Stdout: s.Stdout, Tty: s.TTY, TerminalSizeQueue: s.Sizes}
	if !s.TTY {
		opts.Stderr = s.Stderr
		if opts.Stderr == nil {
			opts.Stderr = io.Discard
		}
	}
	return func(ctx context.Context) error { return ex.StreamWithContext(ctx, opts) }, nil
}

// tail keeps the last lines of a log for failure messages.
type tail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == t.max {
		t.lines = t.lines[1:]
	}
	t.lines = append(t.lines, line)
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// sizes is a TerminalSizeQueue that hands out one size, then blocks until
// its context ends: client-go reads it until Next returns nil.
type sizes struct {
	ctx  context.Context
	once chan remotecommand.TerminalSize
}

func newSizes(ctx context.Context, w, h uint16) *sizes {
	s := &sizes{ctx: ctx, once: make(chan remotecommand.TerminalSize, 1)}
	s.once <- remotecommand.TerminalSize{Width: w, Height: h}
	return s
}

func (s *sizes) Next() *remotecommand.TerminalSize {
	select {
	case sz := <-s.once:
		return &sz
	case <-s.ctx.Done():
		return nil
	}
}

// byteChan is a Writer that hands every byte written to it to a channel,
// for round-trip measurements.
type byteChan chan byte

func (c byteChan) Write(p []byte) (int, error) {
	for _, b := range p {
		c <- b
	}
	return len(p), nil
}

// countWriter counts bytes.
type countWriter struct {
	mu sync.Mutex
	n  int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.n += int64(len(p))
	w.mu.Unlock()
	return len(p), nil
}

func (w *countWriter) count() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// firstByte records when the first byte arrives and keeps everything.
type firstByte struct {
	mu    sync.Mutex
	at    time.Time
	buf   []byte
	first chan struct{}
}

func newFirstByte() *firstByte { return &firstByte{first: make(chan struct{})} }

func (f *firstByte) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.at.IsZero() && len(p) > 0 {
		f.at = time.Now()
		close(f.first)
	}
	f.buf = append(f.buf, p...)
	return len(p), nil
}

func (f *firstByte) result() (time.Time, []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.at, append([]byte(nil), f.buf...)
}

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) []byte {
	var b []byte
	for i := 1; i <= n; i++ {
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, '\n')
	}
	return b
}
