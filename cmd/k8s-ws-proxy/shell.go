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
	tokenCommand := fs.String("token-command", "", "command (run by /bin/sh -c) that prints a fresh token: the first one without --token, and a resume token for each reconnect of a resumable session, with K8S_WS_PROXY_RESUME=<sid> and K8S_WS_PROXY_RESUME_OFFSET=<output bytes received> set")
	retain := fs.Int("stdin-retain", defaultStdinRetain, "bytes of stdin sent that a resumable session keeps to resend after a drop (what the proxy had not taken)")
	resumeTimeout := fs.Duration("resume-timeout", defaultResumeTimeout, "how long to keep trying to resume after a drop (the proxy's --resume-window bounds it)")
	keepalive := fs.Duration("keepalive", defaultKeepalive, "ping period of a resumable session's connection; one silent for two periods counts as dropped and is resumed (0: no pings, wait for TCP)")
	if code, stop := fs.parse(args, stdout, stderr); stop {
		return code
	}
	if *retain < stdinChunk || *resumeTimeout <= 0 || *keepalive < 0 {
		fmt.Fprintf(stderr, "shell: --stdin-retain must be at least %d, --resume-timeout above 0 and --keepalive not negative\n", stdinChunk)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	tok, err := readToken(*token, *tokenFile)
	if err != nil && *tokenCommand != "" {
		tok, err = runTokenCommand(ctx, *tokenCommand, "", 0)
	}
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
	t := term.TTY{In: os.Stdin, Out: os.Stdout, Raw: claims.TTY && claims.Stdin}
	if claims.Resumable {
		err = runShellResumable(ctx, t, cfg, execURL, claims, tok, resumeOptions{
			tokenCommand: *tokenCommand, retain: *retain, resumeTimeout: *resumeTimeout, keepalive: *keepalive, notices: stderr,
		})
		return shellExit(err, stderr)
	}
	executor, err := remotecommand.NewWebSocketExecutorForProtocols(cfg, "GET", execURL,
		streamproto.StreamProtocolV5Name, streamproto.StreamProtocolV4Name)
	if err != nil {
		fmt.Fprintln(stderr, "shell:", err)
		return 1
	}
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
	return shellExit(err, stderr)
}

// runShellResumable runs a resumable token's session with the resuming
// client (shellresume.go), the terminal in raw mode across reconnects.
func runShellResumable(ctx context.Context, t term.TTY, cfg *rest.Config, execURL string, claims *hmac.Claims, tok string, o resumeOptions) error {
	if claims.SID == "" {
		return errors.New("the token is resumable but has no sid: the proxy refuses it")
	}
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return err
	}
	o.execURL, o.tls, o.sid = "ws"+strings.TrimPrefix(execURL, "http"), tlsCfg, claims.SID
	o.stdout, o.rawTTY = os.Stdout, t.Raw
	if claims.Stdin {
		o.stdin = os.Stdin
	}
	if claims.TTY {
		if sizes := t.MonitorSize(t.GetSize()); sizes != nil {
			o.sizes = kubectlSizes{sizes}
		}
	}
	if exec.SeparateStderr(claims.TTY, true) {
		o.stderr = os.Stderr
	}
	return t.Safe(func() error { return runResumable(ctx, o, tok) })
}

// shellExit is the shell's exit status for how the session ended.
func shellExit(err error, stderr io.Writer) int {
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
