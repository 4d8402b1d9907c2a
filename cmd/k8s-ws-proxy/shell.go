package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	streamproto "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/kubectl/pkg/util/term"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// runShell is an operator's client: it opens the session a token grants
// through a proxy and attaches the local terminal to it, the way
// `kubectl exec -it` does, and exits with the remote exit code.
func runShell(args []string, stdout, stderr io.Writer) int {
	fs := newCommand("shell", "--url URL --token TOKEN",
		"Attach this terminal to the session the token grants (namespace, pod, container, command and tty come from the token).")
	fs.envVars = map[string]string{"url": "K8S_WS_PROXY_URL", "token": "K8S_WS_PROXY_TOKEN"}
	proxyURL := fs.String("url", os.Getenv("K8S_WS_PROXY_URL"), "proxy base URL, e.g. http://127.0.0.1:8080")
	token := fs.String("token", "", "session token; without it --token-file, then the variable")
	tokenFile := fs.String("token-file", "", "file holding the session token")
	caFile := fs.String("ca-file", "", "CA bundle to verify an https proxy")
	certFile := fs.String("client-cert-file", "", "client certificate for a proxy that requires mutual TLS")
	keyFile := fs.String("client-key-file", "", "client key for --client-cert-file")
	insecure := fs.Bool("insecure-skip-tls-verify", false, "do not verify the proxy's certificate (testing only)")
	if code, stop := fs.parse(args, stdout, stderr); stop {
		return code
	}
	tok, err := readToken(*token, *tokenFile)
	if err != nil {
		fmt.Fprintln(stderr, "shell:", err)
		return 2
	}
	if *proxyURL == "" {
		fmt.Fprintln(stderr, "shell: --url is required")
		return 2
	}
	claims, err := unverifiedClaims(tok)
	if err != nil {
		fmt.Fprintln(stderr, "shell:", err)
		return 2
	}
	cfg := &rest.Config{
		Host:        *proxyURL,
		BearerToken: tok,
		TLSClientConfig: rest.TLSClientConfig{
			Insecure: *insecure, CAFile: *caFile, CertFile: *certFile, KeyFile: *keyFile,
		},
	}
	execURL, err := sessionURL(*proxyURL, claims)
	if err != nil {
		fmt.Fprintln(stderr, "shell:", err)
		return 2
	}
	executor, err := remotecommand.NewWebSocketExecutorForProtocols(cfg, "GET", execURL,
		streamproto.StreamProtocolV5Name, streamproto.StreamProtocolV4Name)
	if err != nil {
		fmt.Fprintln(stderr, "shell:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	t := term.TTY{In: os.Stdin, Out: os.Stdout, Raw: claims.TTY && claims.Stdin}
	opts := remotecommand.StreamOptions{Stdout: os.Stdout}
	if claims.Stdin {
		opts.Stdin = os.Stdin
	}
	if claims.TTY {
		opts.Tty = true
		if sizes := t.MonitorSize(t.GetSize()); sizes != nil {
			opts.TerminalSizeQueue = kubectlSizes{sizes}
		}
	}
	if exec.SeparateStderr(claims.TTY, true) {
		opts.Stderr = os.Stderr
	}
	err = t.Safe(func() error { return executor.StreamWithContext(ctx, opts) })
	var codeErr utilexec.CodeExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &codeErr):
		return codeErr.ExitStatus()
	default:
		fmt.Fprintln(stderr, "shell:", err)
		return 1
	}
}

// kubectlSizes adapts kubectl's terminal size queue to client-go's.
type kubectlSizes struct{ q term.TerminalSizeQueue }

func (k kubectlSizes) Next() *remotecommand.TerminalSize {
	s := k.q.Next()
	if s == nil {
		return nil
	}
	return &remotecommand.TerminalSize{Width: s.Width, Height: s.Height}
}

func readToken(flagValue, file string) (string, error) {
	switch {
	case flagValue != "":
		return flagValue, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	case os.Getenv("K8S_WS_PROXY_TOKEN") != "":
		return os.Getenv("K8S_WS_PROXY_TOKEN"), nil
	}
	return "", errors.New("a token is required: --token, --token-file or K8S_WS_PROXY_TOKEN")
}

// unverifiedClaims reads the target out of the token without checking its
// signature: the client only needs to know where to connect; the proxy is
// the one that verifies.
func unverifiedClaims(tok string) (*hmac.Claims, error) {
	_, payload, err := hmac.Inspect(tok)
	if err != nil {
		return nil, err
	}
	var c hmac.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("token payload is not JSON claims: %v", err)
	}
	if c.Namespace == "" || c.Pod == "" {
		return nil, errors.New("token has no namespace or pod claim")
	}
	return &c, nil
}

// sessionURL is the API-server-shaped URL for the session the claims grant.
func sessionURL(base string, c *hmac.Claims) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("--url: %v", err)
	}
	verb := "exec"
	if len(c.Command) == 0 {
		verb = "attach"
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v1/namespaces/" + url.PathEscape(c.Namespace) +
		"/pods/" + url.PathEscape(c.Pod) + "/" + verb
	q := url.Values{}
	for _, a := range c.Command {
		q.Add("command", a)
	}
	if c.Container != "" {
		q.Set("container", c.Container)
	}
	q.Set("stdin", strconv.FormatBool(c.Stdin))
	q.Set("stdout", "true")
	q.Set("stderr", strconv.FormatBool(exec.SeparateStderr(c.TTY, true)))
	q.Set("tty", strconv.FormatBool(c.TTY))
	u.RawQuery = q.Encode()
	return u.String(), nil
}
