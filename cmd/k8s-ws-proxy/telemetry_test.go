package main

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac/hmactest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tlsreload"
)

// The keyring and the TLS reloader register their own instruments, and
// /metrics shows them; a failed TLS reload is counted.
func TestReloadMetrics(t *testing.T) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	keyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(keyDir, "key"), hmactest.NewKey(t), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keyDir, "junk"), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyring, err := hmac.NewKeyring(hmac.KeyringOptions{Dir: keyDir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}

	ca := testenv.NewCA(t, "serving-ca")
	tlsDir := t.TempDir()
	c1, k1, _ := ca.Serving(t)
	filewatchtest.WriteSecretDir(t, tlsDir, map[string][]byte{"tls.crt": c1, "tls.key": k1})
	r, err := tlsreload.New(tlsreload.Options{CertFile: filepath.Join(tlsDir, "tls.crt"), KeyFile: filepath.Join(tlsDir, "tls.key"),
		PollInterval: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}

	tel, err := newTelemetry(context.Background(), keyring.RegisterMetrics, tlsMetrics(r), tlsMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.shutdown(context.Background())
	metric := func(name string) float64 {
		t.Helper()
		rec := httptest.NewRecorder()
		tel.metricsHandler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		v, err := testenv.ParseMetric(rec.Body.String(), name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for name, want := range map[string]float64{
		"k8s_ws_proxy_keyring_keys":                      1,
		"k8s_ws_proxy_keyring_refused_files":             1,
		"k8s_ws_proxy_keyring_reloads_total":             1,
		"k8s_ws_proxy_keyring_reload_errors_total":       0,
		"k8s_ws_proxy_tls_reloads_total":                 1,
		"k8s_ws_proxy_tls_reload_errors_total":           0,
		"k8s_ws_proxy_tls_certificate_not_after_seconds": float64(r.Leaf().NotAfter.Unix()),
	} {
		if got := metric(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	// A key that does not match the certificate: refused, and counted.
	defer runTLS(r)()
	_, k2, _ := ca.Serving(t)
	filewatchtest.SwapSecretDir(t, tlsDir, map[string][]byte{"tls.crt": c1, "tls.key": k2})
	poll.For(t, 10*time.Second, "a failed TLS reload is counted", func() bool {
		return metric("k8s_ws_proxy_tls_reload_errors_total") >= 1
	})
	if got := metric("k8s_ws_proxy_tls_reloads_total"); got != 1 {
		t.Errorf("k8s_ws_proxy_tls_reloads_total = %v after a refused update, want 1", got)
	}
}
