// Package exec opens Kubernetes exec and attach sessions through the API
// server with client-go's remotecommand executors: WebSocket
// (v5.channel.k8s.io) first, SPDY when the WebSocket upgrade is refused, the
// same choice kubectl makes (KEP-4006).
//
// Stream returns only after everything the process wrote has been handed to
// the caller's writers, so a bridge that sends the status after Stream returns
// never truncates output (kubernetes#124571).
package exec

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	streamproto "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/client-go/util/retry"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/choice"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeclient"
)

// Transport selects the streaming transport toward the API server.
type Transport string

const (
	// TransportAuto offers WebSocket v5 only and falls back to SPDY when that
	// upgrade fails, as kubectl does. v5 is required for the WebSocket path
	// because only v5 can half-close stdin; a v4-only peer (a kubelet behind
	// an old API server, or localexec) therefore gets SPDY.
	TransportAuto Transport = "auto"
	// TransportWebSocket offers v5.channel.k8s.io and then v4.channel.k8s.io,
	// never SPDY. Over v4 a stdin EOF cannot reach the process.
	TransportWebSocket Transport = "websocket"
	// TransportSPDY uses SPDY/3.1 only (protocols v4 down to v1).
	TransportSPDY Transport = "spdy"
)

// ParseTransport parses a --exec-transport value (case-insensitive).
func ParseTransport(s string) (Transport, error) {
	return choice.Parse("exec transport", s, "", TransportAuto, TransportWebSocket, TransportSPDY)
}

// Target is what to run and where. An empty Command means attach.
type Target struct {
	Namespace, Pod, Container  string
	Command                    []string
	TTY, Stdin, Stdout, Stderr bool
}

// SeparateStderr is the rule every side of a session applies: a terminal
// carries the process's stderr in stdout, so a separate stderr stream
// exists only when one is requested without a tty.
func SeparateStderr(tty, requested bool) bool { return requested && !tty }

// Streams are the caller's ends of the session.
type Streams struct {
	// Stdin is read until EOF, which half-closes the process's stdin (SPDY
	// and WebSocket v5). Required when Target.Stdin. client-go may still be
	// blocked reading it after Stream returns: make it return (close the
	// pipe) once Stream has returned.
	Stdin io.Reader
	// Stdout is required when Target.Stdout.
	Stdout io.Writer
	// Stderr is required when Target.Stderr without TTY, unused with TTY.
	Stderr io.Writer
	// Sizes feeds terminal sizes when TTY; nil sends none. client-go reads
	// it from a goroutine until Next returns nil, which the caller must
	// make happen once Stream has returned.
	Sizes remotecommand.TerminalSizeQueue
}

// StdinPusher is a Stdin that can hand its data to the exec's writer
// itself. StreamFrames calls PushTo instead of reading: w takes each
// message as one or more channel-0 frames, is safe for concurrent use,
// and may be written by the stdin's producer in its own goroutine while
// PushTo runs (which saves a goroutine hand-off per keystroke). PushTo
// returns nil at EOF or once the source is closed, or w's error.
type StdinPusher interface {
	io.Reader
	PushTo(w io.Writer) error
}

// Result tells how a session was carried.
type Result struct {
	// Transport is TransportWebSocket or TransportSPDY: the transport of the
	// last attempt (with auto, SPDY after a refused WebSocket upgrade).
	Transport Transport
}

// The client-side rate limit of API requests (serve's --kube-api-qps and
// --kube-api-burst) when the config sets none. Each session start does one
// pod lookup: client-go's default of 5 QPS would queue session starts behind
// each other; the API server's priority and fairness protects it. Streams
// are not rate limited at all.
const (
	DefaultQPS   = 500
	DefaultBurst = 1000
)

// Dialer opens sessions toward one API server.
type Dialer struct {
	cfg       *rest.Config
	transport Transport
	core      rest.Interface
	pods      *kubeclient.Client
	handshake time.Duration // SetHandshakeTimeout
}

// NewDialer returns a Dialer for the API server in cfg.
func NewDialer(cfg *rest.Config, t Transport) (*Dialer, error) {
	if cfg == nil {
		return nil, errors.New("exec: nil rest config")
	}
	if _, err := ParseTransport(string(t)); err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.WrapTransport = observeDials(cfg.WrapTransport)
	if cfg.QPS == 0 && cfg.Burst == 0 && cfg.RateLimiter == nil {
		cfg.QPS, cfg.Burst = DefaultQPS, DefaultBurst
	}
	// Not client-go's typed client: its scheme links every API group into
	// the binary (internal/kubeclient).
	cs, err := kubeclient.New(protobufFirst(cfg))
	if err != nil {
		return nil, err
	}
	return &Dialer{cfg: cfg, transport: t, core: cs.RESTClient(), pods: cs, handshake: DefaultHandshakeTimeout}, nil
}

// protobufFirst asks the API server for protobuf, as its own controllers
// do, unless the caller chose a content type. A pod as an API server
// returns it (managed fields, status) decodes about five times faster
// from protobuf than from JSON, and GetPod runs before every session.
// JSON stays acceptable for servers that only speak JSON.
func protobufFirst(cfg *rest.Config) *rest.Config {
	if cfg.ContentType != "" || cfg.AcceptContentTypes != "" {
		return cfg
	}
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return cfg
}

// Transport returns the configured transport.
func (d *Dialer) Transport() Transport { return d.transport }

// GetPod reads a pod, so that a caller can check it exists, where it runs
// and its containers before accepting a session for it.
//
// A lookup that got no answer at all (connection refused or reset, EOF
// before a response, a timeout) is retried with backoff: under a burst of
// session starts the API server's accept queue overflows and such a
// refusal would cost a healthy session. A GET is idempotent; any answer,
// an error status included, is returned as it is.
func (d *Dialer) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := retry.OnError(podLookupBackoff, func(err error) bool { return ctx.Err() == nil && noAnswer(err) }, func() error {
		var err error
		pod, err = d.getPod(ctx, namespace, name)
		return err
	})
	return pod, err
}

// podLookupBackoff bounds GetPod's retries: 5 attempts over about 1.5 s,
// well inside a client's handshake timeout.
var podLookupBackoff = wait.Backoff{Steps: 5, Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.2}

func (d *Dialer) getPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	if c, ok, err := d.impersonatedCore(ctx); ok || err != nil {
		if err != nil {
			return nil, err
		}
		return c.Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	}
	return d.pods.Pods(namespace).Get(ctx, name, metav1.GetOptions{})
}

// noAnswer tells whether err means the request got no HTTP response (as
// opposed to an API status, which is an answer).
func noAnswer(err error) bool {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return false
	}
	var ne net.Error
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || (errors.As(err, &ne) && ne.Timeout())
}

// URL returns the API server URL of t's exec or attach subresource, with
// the parameters client-go sends.
func (d *Dialer) URL(t Target) *url.URL {
	req := d.core.Post().Namespace(t.Namespace).Resource("pods").Name(t.Pod)
	stderr := SeparateStderr(t.TTY, t.Stderr)
	if len(t.Command) == 0 {
		req = req.SubResource("attach").VersionedParams(&corev1.PodAttachOptions{
			Container: t.Container, Stdin: t.Stdin, Stdout: t.Stdout, Stderr: stderr, TTY: t.TTY,
		}, kubeclient.ParameterCodec)
	} else {
		req = req.SubResource("exec").VersionedParams(&corev1.PodExecOptions{
			Container: t.Container, Command: t.Command, Stdin: t.Stdin, Stdout: t.Stdout, Stderr: stderr, TTY: t.TTY,
		}, kubeclient.ParameterCodec)
	}
	return req.URL()
}

// Stream runs the exec or attach until it ends. It returns nil for exit
// status 0, an error satisfying errors.As(err, &exec.CodeExitError{})
// (k8s.io/client-go/util/exec) for a non-zero exit status, ctx.Err() when
// ctx ended first (the connections are reset at once, whatever the
// transport is doing, which ends the process on a kubelet), ErrNoStatus
// when a v4/v5 backend's connection ended without a status, and other
// errors otherwise.
func (d *Dialer) Stream(ctx context.Context, t Target, s Streams) (Result, error) {
	if err := check(t, s); err != nil {
		return Result{Transport: d.first()}, err
	}
	opts := streamOptions(t, s)
	u := d.URL(t)
	res, err := d.stream(ctx, u, opts)
	var exit utilexec.CodeExitError
	if err != nil && ctx.Err() != nil && !errors.As(err, &exit) {
		// Whatever broke after ctx ended (the reset connections, client-go
		// seeing its own context cancelled) is the cancellation.
		err = ctx.Err()
	}
	return res, err
}

func (d *Dialer) stream(outer context.Context, u *url.URL, opts remotecommand.StreamOptions) (_ Result, err error) {
	ctx, closeConns := d.tracking(outer)
	defer closeConns()
	defer func() { err = explainHandshake(ctx, err) }()
	cfg := d.configFor(ctx) // impersonating the session's user, if any

	switch d.transport {
	case TransportSPDY:
		sp := &trackedSPDY{d: d, u: u}
		return Result{Transport: TransportSPDY}, sp.StreamWithContext(ctx, opts)
	case TransportWebSocket:
		ex, err := remotecommand.NewWebSocketExecutorForProtocols(cfg, "GET", u.String(),
			streamproto.StreamProtocolV5Name, streamproto.StreamProtocolV4Name)
		if err != nil {
			return Result{Transport: TransportWebSocket}, err
		}
		return Result{Transport: TransportWebSocket}, ex.StreamWithContext(ctx, opts)
	default:
		ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", u.String())
		if err != nil {
			return Result{Transport: TransportWebSocket}, err
		}
		// The fallback executor does not say which executor ran; the
		// secondary records it. Both run in this goroutine.
		res := Result{Transport: TransportWebSocket}
		fb, err := remotecommand.NewFallbackExecutor(ws, &trackedSPDY{d: d, u: u, used: &res.Transport}, shouldFallback)
		if err != nil {
			return res, err
		}
		err = fb.StreamWithContext(ctx, opts)
		return res, err
	}
}

func (d *Dialer) first() Transport {
	if d.transport == TransportSPDY {
		return TransportSPDY
	}
	return TransportWebSocket
}

// shouldFallback is kubectl's condition. It must be k8s.io/streaming's
// httpstream: client-go v0.37 returns that package's UpgradeFailureError,
// which apimachinery's IsUpgradeFailure never matches.
func shouldFallback(err error) bool {
	return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
}

func check(t Target, s Streams) error {
	switch {
	case t.Namespace == "" || t.Pod == "":
		return errors.New("exec: namespace and pod are required")
	case !t.Stdin && !t.Stdout && !SeparateStderr(t.TTY, t.Stderr):
		return errors.New("exec: at least one of stdin, stdout, stderr is required")
	case t.Stdin && s.Stdin == nil:
		return errors.New("exec: Target.Stdin without Streams.Stdin")
	case t.Stdout && s.Stdout == nil:
		return errors.New("exec: Target.Stdout without Streams.Stdout")
	case SeparateStderr(t.TTY, t.Stderr) && s.Stderr == nil:
		return errors.New("exec: Target.Stderr without Streams.Stderr")
	}
	for _, a := range t.Command {
		if strings.IndexByte(a, 0) >= 0 {
			return errors.New("exec: NUL byte in command")
		}
	}
	return nil
}

// streamOptions are client-go's options for t's streams (Stream and the
// frame relay's SPDY fallback).
func streamOptions(t Target, s Streams) remotecommand.StreamOptions {
	opts := remotecommand.StreamOptions{Tty: t.TTY}
	if t.Stdin {
		opts.Stdin = s.Stdin
	}
	if t.Stdout {
		opts.Stdout = s.Stdout
	}
	if SeparateStderr(t.TTY, t.Stderr) {
		opts.Stderr = s.Stderr
	}
	if t.TTY && s.Sizes != nil {
		opts.TerminalSizeQueue = s.Sizes
	}
	return opts
}
