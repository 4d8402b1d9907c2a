// Package e2e runs the built k8s-ws-proxy binary against the local exec
// backend (the upstream kubelet streaming server running real processes)
// and drives it with the clients that matter: client-go's WebSocket
// executor and a client that behaves exactly as guacd does.
package e2e

import (
	"bytes"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/localexec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testnet"
)

// proxyBin is the k8s-ws-proxy binary under test, built once by TestMain,
// with the race detector when the tests run with it.
var proxyBin string

func TestMain(m *testing.M) { testenv.MainWithProxy(m, &proxyBin) }

const (
	testNamespace = "team-a"
	testPod       = "web-0"
	testContainer = "shell"
	testNode      = "node-1"
)

// env is one proxy process in front of one local exec backend.
type env struct {
	*testenv.Proxy
	t       *testing.T
	backend *localexec.Server
	keyDir  string
	key     []byte
	signer  *hmac.Signer
	cutter  *testnet.Cutter
	// minted holds every token mint made, for the no-token checks.
	mintMu sync.Mutex
	minted []string
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
	e := &env{t: t}

	backend, backendURL := testenv.StartBackend(t, localexec.Pod{
		Namespace: testNamespace, Name: testPod, NodeName: testNode,
		Containers: []localexec.Container{{Name: testContainer}, {Name: "sidecar"}},
	})
	e.backend = backend

	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	apiAddr := strings.TrimPrefix(backendURL, "http://")
	switch {
	case o.backendAddr != "":
		apiAddr = o.backendAddr
	case o.viaCutter:
		e.cutter = testnet.NewCutter(t, apiAddr)
		apiAddr = e.cutter.Addr()
	}
	testenv.WriteKubeconfig(t, kubeconfig, "http://"+apiAddr)
	e.keyDir = filepath.Join(dir, "keys")
	e.key = bytes.Repeat([]byte("k"), 32)
	copy(e.key, []byte(t.Name()))
	filewatchtest.WriteSecretDir(t, e.keyDir, map[string][]byte{"key": e.key})
	var err error
	e.signer, err = hmac.NewSigner(e.key)
	if err != nil {
		t.Fatal(err)
	}

	args := testenv.ServeArgs(e.keyDir, kubeconfig, testNode, o.transport, append([]string{"--shutdown-grace", "5s"}, o.extraArgs...)...)
	// Registered before StartProxy's own cleanup, so it runs after the
	// proxy has stopped and sees the whole log.
	t.Cleanup(func() {
		if e.Proxy != nil {
			assertJSONLog(t, e.Proxy)
		}
	})
	e.Proxy = testenv.StartProxy(t, testenv.ProxyOptions{Bin: proxyBin, Args: args, Env: o.env})
	return e
}

// claims returns a valid claim set for the test pod; tweak before minting.
func (e *env) claims(command ...string) hmac.Claims {
	return testenv.Claims(testenv.Target{Namespace: testNamespace, Pod: testPod, Container: testContainer, Node: testNode}, command...)
}

func (e *env) mint(c hmac.Claims) string {
	e.t.Helper()
	tok := testenv.Mint(e.t, e.signer, c)
	e.mintMu.Lock()
	e.minted = append(e.minted, tok)
	e.mintMu.Unlock()
	return tok
}

// waitFor polls cond until it holds or the deadline passes. It is for
// conditions outside this process (another process's children), where no
// event can be waited on.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	poll.For(t, within, what, cond)
}
