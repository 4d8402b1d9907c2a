// Command local-exec-backend serves package localexec on its own: the
// upstream kubelet streaming server in front of local processes, answering
// the API server's pod, exec and attach paths and the kubelet's /exec and
// /attach paths, for the demo and for tests that want a separate process.
//
// It runs arbitrary commands as its own user for whoever can reach it, so
// it is never part of the production image, and it refuses a non-loopback
// address unless client certificates are required.
//
// Usage:
//
//	local-exec-backend [--listen 127.0.0.1:10250] [--pods default/demo:shell]
//	    [--node-name local] [--tls-cert-file F --tls-key-file F [--client-ca-file F]]
//
// Once it accepts connections it logs one JSON line with msg "listening" and
// the address in "addr".
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"k8s.io/klog/v2"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/cmdmain"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/localexec"
)

func main() {
	cmdmain.Main(run)
}

// run is main without the process: it returns the exit code (2 for usage
// errors) and logs JSON to logOut.
func run(ctx context.Context, args []string, logOut io.Writer) int {
	fs := flag.NewFlagSet("local-exec-backend", flag.ContinueOnError)
	fs.SetOutput(logOut)
	listen := fs.String("listen", "127.0.0.1:10250", "address to listen on")
	podsSpec := fs.String("pods", "default/demo:shell",
		`pods to serve: "ns/pod:container[,container...][;ns/pod:...]", inline JSON ("[...]"), or a *.json file`)
	nodeName := fs.String("node-name", "local", "spec.nodeName of the pods that do not name one")
	certFile := fs.String("tls-cert-file", "", "serving certificate (PEM); enables TLS")
	keyFile := fs.String("tls-key-file", "", "serving key (PEM)")
	clientCA := fs.String("client-ca-file", "", "require client certificates signed by these CAs (PEM)")
	if code, done := cmdmain.Parse(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(logOut, "unexpected arguments: %q\n", fs.Args())
		return 2
	}

	log := cmdmain.Logger(logOut)
	// The upstream streaming code logs through klog; keep one JSON stream.
	klog.SetSlogLogger(log)
	fail := func(msg string, err error) int {
		log.Error(msg, "error", err.Error())
		return 1
	}

	pods, err := localexec.LoadPods(*podsSpec, *nodeName)
	if err != nil {
		return fail("invalid --pods", err)
	}
	useTLS := *certFile != "" || *keyFile != "" || *clientCA != ""
	if err := checkExposure(*listen, *clientCA != ""); err != nil {
		return fail("refusing to listen", err)
	}
	backend, err := localexec.NewServer(localexec.Config{Pods: pods, Logger: log})
	if err != nil {
		return fail("invalid pods", err)
	}
	defer backend.Close()
	hs := &http.Server{
		Handler:           backend,
		ReadHeaderTimeout: 30 * time.Second,
		// Keep-alive connections between requests are not held forever.
		IdleTimeout: 60 * time.Second,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if useTLS {
		if hs.TLSConfig, err = localexec.LoadTLSConfig(*certFile, *keyFile, *clientCA); err != nil {
			return fail("TLS configuration", err)
		}
	}
	ln, err := cmdmain.Listen(log, *listen)
	if err != nil {
		return 1
	}
	served := make(chan error, 1)
	go func() {
		if useTLS {
			served <- hs.ServeTLS(ln, "", "")
		} else {
			served <- hs.Serve(ln)
		}
	}()
	names := make([]string, len(pods))
	for i, p := range pods {
		names[i] = p.Namespace + "/" + p.Name
	}
	log.Info("listening", "addr", ln.Addr().String(), "tls", useTLS, "client_certs", *clientCA != "", "pods", names)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-served:
		return fail("serve", err)
	}
	// Streams are hijacked connections that Shutdown does not wait for:
	// killing the processes ends them.
	backend.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	<-served
	return 0
}

// checkExposure refuses an address reachable from other machines unless
// clients must present a certificate: anyone reaching this server can run
// commands.
func checkExposure(addr string, clientCerts bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if clientCerts {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s is not a loopback address and --client-ca-file is not set: anyone reaching it could run commands", addr)
	}
	return nil
}
