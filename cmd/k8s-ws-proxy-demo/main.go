// Command k8s-ws-proxy-demo runs k8s-ws-proxy on one machine with no
// cluster: a local exec backend (the upstream kubelet streaming server,
// running local processes as the containers of pod default/demo) stands in
// for the API server, the real k8s-ws-proxy binary serves in front of it,
// and the demo prints a browser terminal's URL (the page, xterm.js, is
// served by the demo, never by the proxy), a ready shell command and
// guacd's parameters.
//
// It is a development tool: it links the local backend, which can run local
// processes, so it is never part of the production image.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/cmd/k8s-ws-proxy-demo/web"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/cmdmain"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeconfig"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/localexec"
)

const (
	demoNamespace = "default"
	demoPod       = "demo"
	demoContainer = "shell"
	demoNode      = "demo-node"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	self, _ := os.Executable()
	listen := flag.String("listen", "127.0.0.1:8080", "address the proxy listens on")
	webListen := flag.String("web-listen", "127.0.0.1:8081", "address the browser terminal page is served on")
	proxyBin := flag.String("proxy-bin", filepath.Join(filepath.Dir(self), "k8s-ws-proxy"), "the k8s-ws-proxy binary to run")
	selfTest := flag.Bool("self-test", false, "run one session through the proxy, check its output, and exit")
	flag.Parse()

	ctx, stop := cmdmain.Context()
	defer stop()

	work, err := os.MkdirTemp("", "k8s-ws-proxy-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	// The key, as a Secret volume would hold it.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	keyDir := filepath.Join(work, "keys")
	if err := os.Mkdir(keyDir, 0o700); err != nil {
		return err
	}
	keyFile := filepath.Join(keyDir, "key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		return err
	}
	keyBytes, err := hmac.LoadKeyFile(keyFile)
	if err != nil {
		return err
	}

	// The local exec backend in place of the API server.
	backend, err := localexec.NewServer(localexec.Config{
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Pods: []localexec.Pod{{Namespace: demoNamespace, Name: demoPod, NodeName: demoNode,
			Containers: []localexec.Container{{Name: demoContainer, Entrypoint: []string{"/bin/sh"}}}}},
	})
	if err != nil {
		return err
	}
	defer backend.Close()
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// The backend's own log is not shown; klog (the upstream streaming
	// code) and net/http's error log go to the same discarded JSON stream
	// instead of text on the demo's terminal.
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	klog.SetSlogLogger(quiet)
	bsrv := &http.Server{Handler: backend, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second,
		ErrorLog: slog.NewLogLogger(quiet.Handler(), slog.LevelWarn)}
	go bsrv.Serve(bln)
	defer bsrv.Close()
	kubeconfigPath := filepath.Join(work, "kubeconfig")
	if err := kubeconfig.Write(kubeconfigPath, &rest.Config{Host: "http://" + bln.Addr().String(), BearerToken: "unused-by-the-local-backend"}); err != nil {
		return err
	}

	// The browser terminal's page, on its own origin: the proxy is told to
	// accept WebSocket upgrades from it.
	wln, err := net.Listen("tcp", *webListen)
	if err != nil {
		return err
	}
	wsrv := &http.Server{Handler: web.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go wsrv.Serve(wln)
	defer wsrv.Close()
	pageOrigin := "http://" + wln.Addr().String()

	// The real proxy binary.
	logPath := filepath.Join(work, "proxy.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := osexec.Command(*proxyBin, "serve", "--listen", *listen, "--health-listen", "127.0.0.1:0",
		"--key-dir", keyDir, "--kubeconfig", kubeconfigPath, "--node-name", demoNode, "--allowed-origins", pageOrigin)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s (run `make build` first): %w", *proxyBin, err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	addr, err := waitListening(stderr, logFile)
	if err != nil {
		return err
	}

	signer, err := hmac.NewSigner(keyBytes)
	if err != nil {
		return err
	}
	mint := func(command []string) (string, error) {
		now := time.Now()
		return signer.Sign(hmac.Claims{
			RegisteredClaims: jwt.RegisteredClaims{
				Audience: jwt.ClaimStrings{hmac.DefaultAudience}, IssuedAt: jwt.NewNumericDate(now),
				ExpiresAt: jwt.NewNumericDate(now.Add(5 * time.Minute)), ID: hmac.NewID(), Subject: "demo-user",
			},
			Namespace: demoNamespace, Pod: demoPod, Container: demoContainer, Command: command,
			TTY: true, Stdin: true, Node: demoNode,
		})
	}
	if *selfTest {
		if err := checkPage(pageOrigin); err != nil {
			return err
		}
		return runSelfTest(ctx, *proxyBin, addr, mint)
	}
	shellTok, err := mint([]string{"/bin/sh"})
	if err != nil {
		return err
	}
	guacdTok, err := mint([]string{"/bin/sh"})
	if err != nil {
		return err
	}
	browserTok, err := mint([]string{"/bin/sh"})
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(addr)
	fmt.Printf(`
k8s-ws-proxy demo is running (Ctrl-C stops it).
  proxy:    ws://%[1]s     log: %[2]s
  backend:  local processes as pod %[3]s/%[4]s, container %[5]s (kubelet streaming server)

Open a terminal in a browser (the token is in the #fragment, never sent to a server):

  %[13]s

Open a shell, in another terminal (the token is single-use and valid 5 minutes):

  %[6]s shell --url http://%[1]s --token %[7]s

Mint another token:

  %[6]s token mint --key-file %[8]s --namespace %[3]s --pod %[4]s --container %[5]s --command /bin/sh --tty --stdin --node %[9]s

guacd connection parameters (protocol "kubernetes"; another single-use token):

  hostname=%[10]s port=%[11]s use-ssl=false namespace=%[3]s container=%[5]s exec-command=/bin/sh
  pod=%[12]s

`, addr, logPath, demoNamespace, demoPod, demoContainer, *proxyBin, shellTok, keyFile, demoNode, host, port, guacdTok,
		web.PageURL(pageOrigin, "ws://"+addr, demoNamespace, demoPod, demoContainer, []string{"/bin/sh"}, browserTok))
	<-ctx.Done()
	fmt.Println("stopping")
	return nil
}

// waitListening copies the proxy's log to w and returns the address from
// its "listening" line.
func waitListening(r io.Reader, w io.Writer) (string, error) {
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(w, sc.Text())
			var m struct{ Msg, Address string }
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Msg == "listening" {
				select {
				case found <- m.Address:
				default:
				}
			}
		}
		close(found)
	}()
	select {
	case addr, ok := <-found:
		if !ok {
			return "", errors.New("the proxy exited before listening; see its log")
		}
		return addr, nil
	case <-time.After(30 * time.Second):
		return "", errors.New("the proxy did not log 'listening' within 30s")
	}
}

// runSelfTest drives one session with `k8s-ws-proxy shell`, exactly as a
// user of the demo would, and checks the output and exit code.
func runSelfTest(ctx context.Context, proxyBin, addr string, mint func([]string) (string, error)) error {
	tok, err := mint([]string{"/bin/sh"})
	if err != nil {
		return err
	}
	cmd := osexec.CommandContext(ctx, proxyBin, "shell", "--url", "http://"+addr, "--token", tok)
	cmd.Stdin = strings.NewReader("echo demo-$((20+22))\nexit 5\n")
	out, err := cmd.Output()
	var exitErr *osexec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 5 {
		return fmt.Errorf("self-test: shell ended with %v, want exit code 5; output %q", err, out)
	}
	if !strings.Contains(string(out), "demo-42") {
		return fmt.Errorf("self-test: output %q lacks demo-42", out)
	}
	fmt.Println("self-test passed: a shell through the proxy ran and exited with code 5")
	return nil
}

// checkPage fetches the page and the scripts it loads, as a browser would.
func checkPage(origin string) error {
	for _, path := range []string{"/", "/terminal.js", "/page.js", "/vendor/xterm/xterm.js", "/vendor/addon-fit/addon-fit.js"} {
		resp, err := http.Get(origin + path)
		if err != nil {
			return fmt.Errorf("self-test: page: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("self-test: GET %s: %s", path, resp.Status)
		}
	}
	fmt.Println("self-test: the browser terminal page is served at", origin)
	return nil
}
