package e2e

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// TestTracesOverOTLP: with the standard OTEL_* variables set, the proxy
// exports a span per session (and its token-check and exec-dial children)
// to an OTLP/HTTP collector, and no span carries the token.
func TestTracesOverOTLP(t *testing.T) {
	bodies := make(chan []byte, 100)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/traces" {
			bodies <- b
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()
	e := startEnv(t, envOptions{env: []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL,
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}})
	c := e.claims("echo", "traced")
	tok := e.mint(c)
	var out bytes.Buffer
	if err := e.clientGoExecToken(testenv.Context(t, 30*time.Second), protocolSets["v5"], c, tok,
		remotecommand.StreamOptions{Stdout: &out, Stderr: io.Discard}); err != nil {
		t.Fatal(err)
	}
	var all []byte
	deadline := time.After(20 * time.Second)
	for !bytes.Contains(all, []byte("k8s_ws_proxy.exec.dial")) || !bytes.Contains(all, []byte("k8s_ws_proxy.session")) ||
		!bytes.Contains(all, []byte("k8s_ws_proxy.token.verify")) {
		select {
		case b := <-bodies:
			all = append(all, b...)
		case <-deadline:
			t.Fatalf("spans not exported; got %q", all)
		}
	}
	if bytes.Contains(all, []byte(tok)) || bytes.Contains(all, []byte(strings.Split(tok, ".")[2])) {
		t.Fatal("a span carries the token")
	}
}
