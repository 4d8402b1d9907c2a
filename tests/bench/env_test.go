package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/goleak"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/klog/v2"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac/hmactest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// relayBin is tests/bench/relay, the bare hop, built as the proxy is.
var relayBin string

const relayPackage = "github.com/k8s-ws-proxy/k8s-ws-proxy/tests/bench/relay"

// proxyBin is the k8s-ws-proxy binary measured, built once by TestMain as
// `make build` builds it, never with -race.
var proxyBin string

func TestMain(m *testing.M) {
	bin, remove, err := testenv.BuildProxy(testenv.BuildRelease)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	proxyBin = bin
	bbin, removeBackend, err := testenv.BuildBackend(testenv.BuildRelease)
	if err != nil {
		remove()
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	backendBin = bbin
	rbin, removeRelay, err := testenv.BuildPackage(relayPackage, testenv.BuildRelease)
	if err != nil {
		remove()
		removeBackend()
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayBin = rbin
	// client-go logs every stream a cancelled session leaves behind
	// ("Copying stdin failed", ...); sessions here end that way by design,
	// and failures reach the tests as errors.
	klog.SetLogger(logr.Discard())
	code := m.Run()
	results.print(os.Stdout)
	// A missed headline target already failed its benchmark (stack.set);
	// this says which, at the end of the table, where make bench's reader
	// looks.
	if missed := results.missed(); len(missed) > 0 {
		fmt.Fprintf(os.Stdout, "\nFAIL: %d headline target(s) missed:\n  %s\n", len(missed), strings.Join(missed, "\n  "))
		code = max(code, 1)
	}
	remove()
	removeBackend()
	removeRelay()
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
	var err error
	_ = poll.Until(context.Background(), poll.Interval, 20*time.Second, func(context.Context) error {
		// klog starts its flush daemon in init; it lives for the process.
		err = goleak.Find(goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
		return err
	})
	return err
}

const (
	benchNamespace = "bench"
	benchPod       = "bench-0"
	benchContainer = "main"
	benchNode      = "bench-node"
)

// Path indices: every measurement runs the same sessions over the three
// paths, interleaved.
const (
	direct = iota
	relayed
	proxied
	nPaths
)

var pathNames = [nPaths]string{"direct", "relay", "proxy"}

// env is one exec backend, reached either straight (the local backend) or
// through a real kube-apiserver, the bare relay in front of that same
// endpoint, and the key material proxies in front of it use.
type env struct {
	backend *backendProc
	// apiURL and apiCA are where exec clients go: the backend itself, or
	// the API server in front of it.
	apiURL string
	apiCA  []byte
	// clientCert and clientKey authenticate clients to the API server
	// (nil toward the local backend, which asks for no credentials).
	clientCert, clientKey []byte
	relay                 *testenv.Proxy
	// front signs the serving certificates of the relay and the proxies:
	// both are reached over TLS, as the backend is.
	front               *testenv.CA
	frontCert, frontKey string // files
	signer              *hmac.Signer
	keyDir              string
	kubeconfig          string
	dialers             map[[2]int]*exec.Dialer // {transport index, path}
}

// newEnv starts the local backend in its own process and the relay in
// front of it.
func newEnv(tb testing.TB) *env {
	tb.Helper()
	backend := startBackend(tb, benchNamespace+"/"+benchPod+":"+benchContainer, benchNode, nil, nil, nil)
	e := &env{backend: backend, apiURL: backend.url, apiCA: backend.caPEM}
	e.init(tb, func(path string) { testenv.WriteKubeconfigCA(tb, path, e.apiURL, e.apiCA) })
	return e
}

// init writes the proxies' keys and kubeconfig and starts the relay
// toward e.apiURL.
func (e *env) init(tb testing.TB, writeKubeconfig func(path string)) {
	tb.Helper()
	dir := tb.TempDir()
	e.kubeconfig = filepath.Join(dir, "kubeconfig")
	writeKubeconfig(e.kubeconfig)
	e.keyDir = filepath.Join(dir, "keys")
	key := hmactest.NewKey(tb)
	filewatchtest.WriteSecretDir(tb, e.keyDir, map[string][]byte{"key": key})
	var err error
	if e.signer, err = hmac.NewSigner(key); err != nil {
		tb.Fatal(err)
	}
	e.front = testenv.NewCA(tb, "bench-front")
	cert, fkey, _ := e.front.Serving(tb)
	e.frontCert, e.frontKey = filepath.Join(dir, "front.crt"), filepath.Join(dir, "front.key")
	files := map[string][]byte{e.frontCert: cert, e.frontKey: fkey, filepath.Join(dir, "api-ca.crt"): e.apiCA}
	if e.clientCert != nil {
		files[filepath.Join(dir, "client.crt")] = e.clientCert
		files[filepath.Join(dir, "client.key")] = e.clientKey
	}
	for f, b := range files {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	args := []string{"--listen", "127.0.0.1:0", "--upstream", strings.TrimPrefix(e.apiURL, "https://"),
		"--tls-cert-file", e.frontCert, "--tls-key-file", e.frontKey, "--upstream-ca-file", filepath.Join(dir, "api-ca.crt")}
	if e.clientCert != nil {
		args = append(args, "--upstream-cert-file", filepath.Join(dir, "client.crt"), "--upstream-key-file", filepath.Join(dir, "client.key"))
	}
	e.relay = testenv.StartBackendProcess(tb, testenv.ProxyOptions{Bin: relayBin, Args: args, KeepLines: 40})
	e.dialers = map[[2]int]*exec.Dialer{}
}

// dialer is package exec toward the endpoint (k = direct) or through the
// relay (k = relayed), with transport tr.
func (e *env) dialer(tb testing.TB, tr exec.Transport, k int) *exec.Dialer {
	tb.Helper()
	id := [2]int{transportIndex(tr), k}
	if d := e.dialers[id]; d != nil {
		return d
	}
	cfg := &rest.Config{Host: e.apiURL, TLSClientConfig: rest.TLSClientConfig{CAData: e.apiCA, CertData: e.clientCert, KeyData: e.clientKey}}
	if k == relayed {
		// TLS ends at the relay, which presents the client certificate
		// upstream itself.
		cfg = &rest.Config{Host: "https://" + e.relay.Addr, TLSClientConfig: rest.TLSClientConfig{CAData: e.front.PEM}}
	}
	d, err := exec.NewDialer(cfg, tr)
	if err != nil {
		tb.Fatal(err)
	}
	e.dialers[id] = d
	return d
}

func transportIndex(tr exec.Transport) int {
	if tr == exec.TransportWebSocket {
		return 0
	}
	return 1
}

// paths returns direct, relay and proxy paths for s (s.tr is the
// clients' transport on the first two, the proxy's toward the backend on
// the third), starting a proxy with s.args.
func (e *env) paths(tb testing.TB, s spec) ([nPaths]path, *proxyProc) {
	tb.Helper()
	p := e.startProxy(tb, s.tr, s.args...)
	return [nPaths]path{
		clientPath{n: pathNames[direct], e: e, d: e.dialer(tb, s.tr, direct)},
		clientPath{n: pathNames[relayed], e: e, d: e.dialer(tb, s.tr, relayed)},
		p.path(e),
	}, p
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

// clientPath is package exec (client-go's executors) to the endpoint,
// straight or through the relay.
type clientPath struct {
	n string
	e *env
	d *exec.Dialer
}

func (c clientPath) name() string { return c.n }

func (c clientPath) prepare(s session) (func(context.Context) error, error) {
	st := exec.Streams{Stdin: s.Stdin, Stdout: s.Stdout, Stderr: s.Stderr, Sizes: s.Sizes}
	if st.Stderr == nil {
		st.Stderr = io.Discard
	}
	t := c.e.target(s)
	return func(ctx context.Context) error {
		_, err := c.d.Stream(ctx, t, st)
		return err
	}, nil
}

// proxyProc is one k8s-ws-proxy process in front of an env's endpoint.
type proxyProc struct {
	*testenv.Proxy
	transport exec.Transport
}

// startProxy starts the binary toward e's endpoint with the given exec
// transport, serving TLS with the relay's certificate, and waits for its
// "listening" line.
func (e *env) startProxy(tb testing.TB, transport exec.Transport, extraArgs ...string) *proxyProc {
	tb.Helper()
	return e.startProxyKeeping(tb, transport, nil, extraArgs...)
}

// startProxyKeeping is startProxy keeping, besides the last lines, the
// log lines keep picks (testenv.ProxyOptions.Keep).
func (e *env) startProxyKeeping(tb testing.TB, transport exec.Transport, keep func(string) bool, extraArgs ...string) *proxyProc {
	tb.Helper()
	args := testenv.ServeArgs(e.keyDir, e.kubeconfig, benchNode, string(transport),
		append([]string{"--shutdown-grace", "2s", "--max-sessions", "4096",
			"--tls-cert-file", e.frontCert, "--tls-key-file", e.frontKey}, extraArgs...)...)
	// Only the last lines are kept: a load run logs two audit lines per
	// session.
	o := testenv.ProxyOptions{Bin: proxyBin, Args: args, KeepLines: 40, Keep: keep}
	if *profile != "" {
		profiles++
		o.Env = []string{fmt.Sprintf("K8S_WS_PROXY_CPUPROFILE=%s-%s-%s-%d", *profile, sanitize(tb.Name()), transport, profiles)}
	}
	p := testenv.StartProxy(tb, o)
	return &proxyProc{Proxy: p, transport: transport}
}

// profile is a path prefix for CPU and heap profiles of the proxy. The
// proxy must then be built with -tags pprof (GOFLAGS=-tags=pprof go test
// ...: the build of the binary inherits GOFLAGS); bulk and echo profile
// the stretch they measure (see cmd/k8s-ws-proxy/profile_pprof.go).
var (
	profile  = flag.String("proxy.profile", "", "write CPU and heap profiles of the proxy under bulk and echo to this path prefix (needs GOFLAGS=-tags=pprof)")
	profiles int
)

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '=' || r == ' ' {
			return '_'
		}
		return r
	}, s)
}

// profiled runs f with the proxy's CPU profile on, when -proxy.profile
// asks for it.
func (p *proxyProc) profiled(tb testing.TB, f func()) {
	if *profile == "" {
		f()
		return
	}
	if err := p.Process().Signal(syscall.SIGUSR1); err != nil {
		tb.Fatal(err)
	}
	f()
	if err := p.Process().Signal(syscall.SIGUSR2); err != nil {
		tb.Fatal(err)
	}
}

type proxyPath struct {
	e *env
	p *proxyProc
}

func (p *proxyProc) path(e *env) proxyPath { return proxyPath{e: e, p: p} }

func (pp proxyPath) name() string { return "proxy" }

func (pp proxyPath) prepare(s session) (func(context.Context) error, error) {
	c := testenv.Claims(testenv.Target{Namespace: benchNamespace, Pod: benchPod, Container: benchContainer, Node: benchNode}, s.Command...)
	c.Subject = "bench@example.com"
	c.TTY, c.Stdin = s.TTY, s.Stdin != nil
	tok, err := pp.e.signer.Sign(c)
	if err != nil {
		return nil, err
	}
	u := "https" + strings.TrimPrefix(testenv.ExecURL(pp.p.Addr, c, !s.TTY), "http")
	ex, err := remotecommand.NewWebSocketExecutorForProtocols(&rest.Config{Host: "https://" + pp.p.Addr, BearerToken: tok,
		TLSClientConfig: rest.TLSClientConfig{CAData: pp.e.front.PEM}},
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
