package testenv

import (
	"log/slog"
	"net"
	"net/http"
	"testing"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/localexec"
)

// StartBackend serves a local exec backend (the upstream kubelet streaming
// server running real processes) for pods on a loopback port until tb's
// test ends, and returns it with its base URL. Its logs are discarded:
// what the tests check is what the proxy and the clients see.
func StartBackend(tb testing.TB, pods ...localexec.Pod) (*localexec.Server, string) {
	tb.Helper()
	backend, err := localexec.NewServer(localexec.Config{Logger: slog.New(slog.DiscardHandler), Pods: pods})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		backend.Close()
		tb.Fatal(err)
	}
	hs := &http.Server{Handler: backend, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(ln)
	}()
	tb.Cleanup(func() {
		// The listener first: Close then waits for the upgraded streams.
		hs.Close()
		<-served
		if err := backend.Close(); err != nil {
			tb.Error(err)
		}
	})
	return backend, "http://" + ln.Addr().String()
}
