package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"log/slog"
	"net"

	"go.opentelemetry.io/otel/metric"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tlsreload"
)

// tlsFlags are serve's TLS settings. They apply to the session listener
// only: probes and metrics stay plain HTTP on --health-listen, so they work
// without a client certificate.
type tlsFlags struct {
	certFile        string
	keyFile         string
	clientCAFile    string
	allowedSubjects string
}

func (f *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.certFile, "tls-cert-file", "", "serving certificate (PEM) for wss://, hot-reloaded; empty serves plain ws://")
	fs.StringVar(&f.keyFile, "tls-key-file", "", "private key (PEM) for --tls-cert-file, hot-reloaded")
	fs.StringVar(&f.clientCAFile, "client-ca-file", "", "CA bundle (PEM) client certificates must chain to; set, it requires mutual TLS; hot-reloaded")
	fs.StringVar(&f.allowedSubjects, "client-allowed-subjects", "", "comma-separated client certificate CNs or DNS SANs accepted with --client-ca-file; empty accepts any the CA signed")
}

// reloader checks the flags go together and loads the files; it returns
// nil, nil when TLS is off.
func (f tlsFlags) reloader(log *slog.Logger) (*tlsreload.Reloader, error) {
	switch {
	case f.certFile == "" && f.keyFile == "" && f.clientCAFile == "" && f.allowedSubjects == "":
		return nil, nil
	case f.certFile == "" || f.keyFile == "":
		return nil, errors.New("--tls-cert-file and --tls-key-file go together (--client-ca-file and --client-allowed-subjects need both)")
	case f.allowedSubjects != "" && f.clientCAFile == "":
		return nil, errors.New("--client-allowed-subjects needs --client-ca-file")
	}
	return tlsreload.New(tlsreload.Options{
		CertFile:        f.certFile,
		KeyFile:         f.keyFile,
		ClientCAFile:    f.clientCAFile,
		AllowedSubjects: splitList(f.allowedSubjects),
		Logger:          log,
	})
}

// runTLS follows the TLS files until the returned stop is called; stop
// waits for the watcher to exit. Safe with a nil reloader.
func runTLS(r *tlsreload.Reloader) (stop func()) {
	if r == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() { cancel(); <-done }
}

// wrapTLS makes ln a TLS listener when r is set. http.Server then runs
// each handshake under its read-header timeout, and answers a plain HTTP
// request with 400 without reading it further.
func wrapTLS(ln net.Listener, r *tlsreload.Reloader) net.Listener {
	if r == nil {
		return ln
	}
	return tls.NewListener(ln, r.Config())
}

// tlsMetrics registers r's instruments; nothing when TLS is off.
func tlsMetrics(r *tlsreload.Reloader) func(metric.MeterProvider) error {
	if r == nil {
		return func(metric.MeterProvider) error { return nil }
	}
	return r.RegisterMetrics
}
