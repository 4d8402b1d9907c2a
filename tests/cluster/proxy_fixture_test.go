package cluster

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac/hmactest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// proxyProc is one `k8s-ws-proxy serve` process, authenticated to the API
// server as the chart's proxy ServiceAccount (bound to the chart's
// ClusterRole), on the workload's node.
type proxyProc struct {
	*testenv.Proxy
	keyDir string
	signer *hmac.Signer
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
	p := &proxyProc{keyDir: filepath.Join(dir, "keys")}
	filewatchtest.WriteSecretDir(t, p.keyDir, map[string][]byte{"key": key})
	var err error
	if p.signer, err = hmac.NewSigner(key); err != nil {
		t.Fatal(err)
	}
	kubeconfig := serviceAccountKubeconfig(t, releaseNamespace, proxyServiceAccount)
	args := testenv.ServeArgs(p.keyDir, kubeconfig, workloadNode, o.transport, append([]string{"--shutdown-grace", "5s"}, o.extra...)...)
	// A drain that outlasts its 5s grace by far is a failure of its own.
	p.Proxy = testenv.StartProxy(t, testenv.ProxyOptions{Bin: proxyBin, Args: args, StopWithin: 30 * time.Second, SlowStopFails: true})
	return p
}

// claims grants a session on the workload's container; empty command means
// attach. Tweak before minting.
func (p *proxyProc) claims(tty bool, command ...string) hmac.Claims {
	c := testenv.Claims(testenv.Target{Namespace: workloadNamespace, Pod: workloadPod, Container: workloadContainer, Node: workloadNode}, command...)
	c.TTY, c.Stdin = tty, true
	return c
}

// sessionsClosed returns the proxy's "session closed" log records so far.
func (p *proxyProc) sessionsClosed() []map[string]any { return p.LogLines("session closed") }
