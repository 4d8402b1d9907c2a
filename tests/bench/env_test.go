package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
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
	// client-go logs every stream a cancelled session leaves behind
	// ("Copying stdin failed", ...); sessions here end that way by design,
	// and failures reach the tests as errors.
	klog.SetLogger(logr.Discard())
	code := m.Run()
	results.print(os.Stdout)
	remove()
	removeBackend()
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

// env is one local exec backend, the direct exec client toward it, and the
// key material proxies in front of it use.
type env struct {
	backend    *backendProc
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
	backend := startBackend(tb, benchNamespace+"/"+benchPod+":"+benchContainer, benchNode)
	e := &env{backend: backend, backendURL: backend.url}

	dir := tb.TempDir()
	e.kubeconfig = filepath.Join(dir, "kubeconfig")
	testenv.WriteKubeconfigCA(tb, e.kubeconfig, e.backendURL, backend.caPEM)
	e.keyDir = filepath.Join(dir, "keys")
	key := hmactest.NewKey(tb)
	filewatchtest.WriteSecretDir(tb, e.keyDir, map[string][]byte{"key": key})
	var err error
	if e.signer, err = hmac.NewSigner(key); err != nil {
		tb.Fatal(err)
	}

	cfg := &rest.Config{Host: e.backendURL, TLSClientConfig: rest.TLSClientConfig{CAData: backend.caPEM}}
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
	*testenv.Proxy
	transport exec.Transport
}

// startProxy starts the binary toward e's backend with the given exec
// transport and waits for its "listening" line.
func (e *env) startProxy(tb testing.TB, transport exec.Transport, extraArgs ...string) *proxyProc {
	tb.Helper()
	args := testenv.ServeArgs(e.keyDir, e.kubeconfig, benchNode, string(transport),
		append([]string{"--shutdown-grace", "2s", "--max-sessions", "4096"}, extraArgs...)...)
	// Only the last lines are kept: a load run logs two audit lines per
	// session.
	p := testenv.StartProxy(tb, testenv.ProxyOptions{Bin: proxyBin, Args: args, KeepLines: 40})
	return &proxyProc{Proxy: p, transport: transport}
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
	u := testenv.ExecURL(pp.p.Addr, c, !s.TTY)
	ex, err := remotecommand.NewWebSocketExecutorForProtocols(&rest.Config{Host: "http://" + pp.p.Addr, BearerToken: tok},
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
