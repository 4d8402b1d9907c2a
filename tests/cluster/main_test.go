package cluster

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeapi"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

var (
	// api is the one API server of this package's run: starting it costs a
	// few seconds, and every test works in namespaces of its own.
	api *kubeapi.Server
	// proxyBin is the k8s-ws-proxy binary under test, built once, with the
	// race detector when the tests run with it.
	proxyBin string

	// teardown holds package-level fixtures' cleanups (the fake kubelet),
	// run after all tests, before the API server stops.
	teardownMu sync.Mutex
	teardown   []func()
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	bin, remove, err := testenv.BuildProxy(testenv.BuildAsTested)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer remove()
	proxyBin = bin

	// A cold run builds kube-apiserver and etcd first (minutes); warm
	// runs reuse .cache/bin.
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	start := time.Now()
	api, err = kubeapi.Start(ctx, kubeapi.Options{AuditPolicy: auditPolicy})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting kube-apiserver:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "kube-apiserver %s ready in %s (etcd %s, apiserver %s)\n",
		api.URL, time.Since(start).Round(time.Millisecond), api.EtcdStartup.Round(time.Millisecond), api.APIServerStartup.Round(time.Millisecond))

	code := m.Run()

	teardownMu.Lock()
	for i := len(teardown) - 1; i >= 0; i-- {
		teardown[i]()
	}
	teardownMu.Unlock()
	if err := api.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping kube-apiserver:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}

func atTeardown(f func()) {
	teardownMu.Lock()
	defer teardownMu.Unlock()
	teardown = append(teardown, f)
}
