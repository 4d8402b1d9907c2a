// Command relay is the benchmarks' bare hop: it accepts TLS, dials TLS to
// one upstream for each connection and copies bytes both ways with
// io.Copy, nothing else (no HTTP, no framing, no authentication). Placed
// where the proxy sits, in front of the same backend, it measures what any
// process in the middle costs on the machine, which is the limit the
// proxy is held to.
//
// Usage:
//
//	relay --listen 127.0.0.1:0 --upstream 127.0.0.1:port \
//	    --tls-cert-file F --tls-key-file F --upstream-ca-file F \
//	    [--upstream-cert-file F --upstream-key-file F]
//
// The upstream client certificate stands in for a client's own: TLS ends
// here, so a client certificate cannot pass through (the API server
// authenticates its clients by certificate). Once it accepts connections
// it logs one JSON line with msg "listening" and the address in "addr".
// It is built for tests only and listens on loopback only.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/cmdmain"
)

func main() {
	cmdmain.Main(run)
}

func run(ctx context.Context, args []string, logOut io.Writer) int {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(logOut)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to listen on")
	upstream := fs.String("upstream", "", "host:port to dial for every connection")
	certFile := fs.String("tls-cert-file", "", "serving certificate (PEM)")
	keyFile := fs.String("tls-key-file", "", "serving key (PEM)")
	upCAFile := fs.String("upstream-ca-file", "", "CA certificates (PEM) that sign the upstream's certificate")
	upCertFile := fs.String("upstream-cert-file", "", "client certificate (PEM) presented upstream")
	upKeyFile := fs.String("upstream-key-file", "", "key (PEM) of --upstream-cert-file")
	if code, done := cmdmain.Parse(fs, args); done {
		return code
	}
	log := cmdmain.Logger(logOut)
	serverTLS, clientTLS, err := configs(*upstream, *certFile, *keyFile, *upCAFile, *upCertFile, *upKeyFile)
	if err != nil {
		log.Error("configuration", "error", err.Error())
		return 2
	}
	host, _, err := net.SplitHostPort(*listen)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		log.Error("refusing to listen", "addr", *listen, "error", "not a loopback address")
		return 2
	}
	ln, err := cmdmain.Listen(log, *listen)
	if err != nil {
		return 1
	}
	log.Info("listening", "addr", ln.Addr().String(), "upstream", *upstream)

	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]struct{}{}
	go func() {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		mu.Lock()
		open[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(open, c)
				mu.Unlock()
			}()
			if err := relay(ctx, tls.Server(c, serverTLS), *upstream, clientTLS); err != nil {
				log.Debug("connection", "error", err.Error())
			}
		})
	}
	wg.Wait()
	log.Info("shut down")
	return 0
}

func configs(upstream, certFile, keyFile, caFile, upCertFile, upKeyFile string) (server, client *tls.Config, err error) {
	if upstream == "" || certFile == "" || keyFile == "" || caFile == "" {
		return nil, nil, errors.New("--upstream, --tls-cert-file, --tls-key-file and --upstream-ca-file are required")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, err
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("%s: no PEM certificates", caFile)
	}
	host, _, err := net.SplitHostPort(upstream)
	if err != nil {
		return nil, nil, err
	}
	// HTTP/1.1 on both legs, as the proxy and a kubelet offer: exec
	// upgrades do not exist over HTTP/2.
	server = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{RootCAs: pool, ServerName: host, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
	if upCertFile != "" || upKeyFile != "" {
		c, err := tls.LoadX509KeyPair(upCertFile, upKeyFile)
		if err != nil {
			return nil, nil, err
		}
		client.Certificates = []tls.Certificate{c}
	}
	return server, client, nil
}

// relay copies between the client and a new upstream connection until
// both directions have ended; one side's end is passed on as a
// close_notify, and an error on either side ends both.
func relay(ctx context.Context, in *tls.Conn, upstream string, cfg *tls.Config) error {
	defer in.Close()
	if err := in.HandshakeContext(ctx); err != nil {
		return err
	}
	d := tls.Dialer{Config: cfg}
	uc, err := d.DialContext(ctx, "tcp", upstream)
	if err != nil {
		return err
	}
	up := uc.(*tls.Conn)
	defer up.Close()
	errs := make(chan error, 2)
	half := func(dst, src *tls.Conn) {
		_, err := io.Copy(dst, src)
		if err == nil {
			err = dst.CloseWrite()
		} else {
			// Unblock the other direction too.
			in.Close()
			up.Close()
		}
		errs <- err
	}
	go half(up, in)
	go half(in, up)
	return errors.Join(<-errs, <-errs)
}
