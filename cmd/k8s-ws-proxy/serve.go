package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tlsreload"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/proxy"
)

// serveOptions are the serve subcommand's settings.
type serveOptions struct {
	listen         string
	healthListen   string
	keyDir         string
	audience       string
	leeway         time.Duration
	maxTTL         time.Duration
	replayCapacity int
	nodeName       string
	execTransport  string
	execHandshake  time.Duration
	frameRelay     string
	kubeconfig     string
	kubeAPIQPS     float64
	kubeAPIBurst   int
	maxFrameSize   int
	maxMessageSize int64
	shutdownGrace  time.Duration
	maxSessions    int
	maxPerSubject  int
	adminListen    string
	adminMaxTTL    time.Duration
	revocations    string
	observerBack   int
	observerNotice bool
	resumeWindow   time.Duration
	resumeBuffer   int
	maxLifetime    time.Duration
	idleTimeout    time.Duration
	pingInterval   time.Duration
	allowedOrigins string
	readHeaderTO   time.Duration
	httpIdleTO     time.Duration
	maxPending     int
	maxAdmissions  int
	logLevel       string
	logFormat      string
	tls            tlsFlags
	namespaces     namespaceFlags
	rec            recordingFlags
}

func newServeFlags(o *serveOptions) *command {
	fs := newCommand("serve", "[flags]", "Runs the proxy (the default subcommand). Every flag can also be set as\nK8S_WS_PROXY_<FLAG> (upper case, - as _); the command line wins.")
	fs.env = true
	fs.StringVar(&o.listen, "listen", ":8080", "address for WebSocket sessions (guacd's default port is 8080)")
	fs.StringVar(&o.healthListen, "health-listen", ":9090", "plain-HTTP address for /healthz, /readyz and /metrics; empty disables")
	fs.StringVar(&o.keyDir, "key-dir", "/etc/k8s-ws-proxy/keys", "directory of HMAC keys (the mounted Secret), hot-reloaded")
	fs.StringVar(&o.audience, "audience", hmac.DefaultAudience, "required aud claim of session tokens")
	fs.DurationVar(&o.leeway, "leeway", hmac.DefaultLeeway, "clock-skew leeway for exp, nbf and iat")
	fs.DurationVar(&o.maxTTL, "max-ttl", hmac.DefaultMaxTTL, "longest accepted token lifetime (exp - iat)")
	fs.IntVar(&o.replayCapacity, "replay-capacity", hmac.DefaultReplayCapacity, "most single-use token ids remembered at once; when full, new tokens are refused")
	fs.StringVar(&o.nodeName, "node-name", "", "this node's name (downward API spec.nodeName); tokens' node claim and the target pod's node must match")
	fs.StringVar(&o.execTransport, "exec-transport", "auto", "exec transport toward the API server: auto (WebSocket, SPDY fallback), websocket or spdy")
	fs.DurationVar(&o.execHandshake, "exec-handshake-timeout", exec.DefaultHandshakeTimeout, "most time an upstream exec handshake (connection, TLS, the upgrade's answer or a refusal's body) may take")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses the in-cluster service account")
	fs.Float64Var(&o.kubeAPIQPS, "kube-api-qps", exec.DefaultQPS, "client-side rate limit of API requests (one pod lookup per session); negative disables")
	fs.IntVar(&o.kubeAPIBurst, "kube-api-burst", exec.DefaultBurst, "burst allowed above --kube-api-qps")
	fs.StringVar(&o.frameRelay, "frame-relay", "auto", "auto relays WebSocket upstream frames without demultiplexing (not for resumable sessions), off always demultiplexes")
	fs.IntVar(&o.maxFrameSize, "max-frame-size", proxy.DefaultMaxFrameSize, "largest frame sent to clients, channel byte included (guacd needs 4096 or less)")
	fs.Int64Var(&o.maxMessageSize, "max-message-size", proxy.DefaultMaxMessageSize, "largest message accepted from clients; larger ones close the session with 1009")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace", 25*time.Second, "on SIGTERM, how long live sessions may run on before they are closed")
	fs.IntVar(&o.maxSessions, "max-sessions", proxy.DefaultMaxSessions, "most concurrent sessions; more get 503 before the upgrade")
	fs.IntVar(&o.maxPerSubject, "max-sessions-per-subject", 0, "most concurrent sessions of one token subject (sub); more get 429 before the upgrade; 0 disables")
	fs.StringVar(&o.adminListen, "admin-listen", "", "address of the admin API (GET/DELETE /sessions, docs/admin.md), authenticated by admin tokens; empty disables")
	fs.DurationVar(&o.adminMaxTTL, "admin-max-ttl", hmac.DefaultAdminMaxTTL, "longest accepted admin token lifetime (exp - iat); admin tokens are not single-use")
	fs.StringVar(&o.revocations, "revocations-file", "", "file of revoked subjects (sub:X) and token ids (jti:X), one a line, hot-reloaded: refused from now on, live sessions ended; empty disables")
	fs.IntVar(&o.observerBack, "observer-scrollback", proxy.DefaultObserverScrollback, "bytes of recent output an observer (token mode observe) receives on joining; 0 sends none")
	fs.BoolVar(&o.observerNotice, "observer-notice", true, "tell the session's user in the terminal when an observer joins or leaves")
	fs.DurationVar(&o.resumeWindow, "resume-window", proxy.DefaultResumeWindow, "how long a session of a resumable token survives an abnormal drop of its client, waiting for a resume (docs/wire-protocol.md#resume); 0 turns resume off")
	fs.IntVar(&o.resumeBuffer, "resume-buffer", proxy.DefaultResumeBuffer, "bytes of output a resumable session keeps for a resume's replay (at least 64 KiB, at most 64 MiB)")
	fs.DurationVar(&o.maxLifetime, "max-session-lifetime", proxy.DefaultMaxLifetime, "sessions are closed after this long; 0 disables")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", proxy.DefaultIdleTimeout, "sessions with no input or output for this long are closed; 0 disables")
	fs.DurationVar(&o.pingInterval, "ping-interval", proxy.DefaultPingInterval, "server ping period; a client silent for two periods is closed; 0 disables")
	fs.StringVar(&o.allowedOrigins, "allowed-origins", "", "comma-separated Origin values accepted besides none and one matching the Host header; * accepts any")
	fs.DurationVar(&o.readHeaderTO, "read-header-timeout", 10*time.Second, "time a client has to send its request headers (slowloris guard)")
	fs.DurationVar(&o.httpIdleTO, "http-idle-timeout", 60*time.Second, "how long a keep-alive connection may wait for its next request (both listeners); sessions are not affected")
	fs.IntVar(&o.maxPending, "max-pending-connections", 256, "most connections per listener that are neither sessions nor in admission (handshakes, requests being read, idle keep-alives); past it the oldest is closed; 0 disables")
	fs.IntVar(&o.maxAdmissions, "max-admissions", 0, "most session requests in admission at once (token, pod lookup, access review: before the upgrade); more get 429 with Retry-After; 0 follows --max-sessions")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "json", "json or text")
	o.tls.register(fs.FlagSet)
	o.namespaces.register(fs.FlagSet)
	o.rec.register(fs.FlagSet)
	return fs
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be json or text, not %q", format)
}

func runServe(args []string, stdout, stderr io.Writer) int {
	var o serveOptions
	if code, stop := newServeFlags(&o).parse(args, stdout, stderr); stop {
		return code
	}
	log, err := newLogger(o.logFormat, o.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "k8s-ws-proxy serve:", err)
		return 2
	}
	routeKlog(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := serve(ctx, o, log); err != nil {
		log.Error("serve failed", "error", err.Error())
		return 1
	}
	return 0
}

// serve runs the proxy until ctx is cancelled, then drains.
func serve(ctx context.Context, o serveOptions, log *slog.Logger) error {
	if o.frameRelay != "auto" && o.frameRelay != "off" {
		return fmt.Errorf("--frame-relay: %q: want auto or off", o.frameRelay)
	}
	transport, err := exec.ParseTransport(o.execTransport)
	if err != nil {
		return fmt.Errorf("--exec-transport: %w", err)
	}
	if o.execHandshake <= 0 {
		return fmt.Errorf("--exec-handshake-timeout must be positive, not %v", o.execHandshake)
	}
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = float32(o.kubeAPIQPS), o.kubeAPIBurst
	dialer, err := exec.NewDialer(cfg, transport)
	if err != nil {
		return fmt.Errorf("exec client: %w", err)
	}
	dialer.SetHandshakeTimeout(o.execHandshake)
	keyring, err := hmac.NewKeyring(hmac.KeyringOptions{Dir: o.keyDir, Grace: o.maxTTL + o.leeway, Logger: log})
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	tlsReloader, err := o.tls.reloader(log)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	namespaces, err := o.namespaces.policy()
	if err != nil {
		return fmt.Errorf("namespace policy: %w", err)
	}
	verifier, err := hmac.NewVerifier(hmac.VerifierOptions{
		Keys: keyring, Audience: o.audience, Leeway: o.leeway, MaxTTL: o.maxTTL, ReplayCapacity: o.replayCapacity,
	})
	if err != nil {
		return fmt.Errorf("verifier: %w", err)
	}
	if o.observerBack < 0 || o.observerBack > 16<<20 {
		return fmt.Errorf("--observer-scrollback %d: must be from 0 to 16 MiB (it is kept for every session)", o.observerBack)
	}
	if o.resumeBuffer < proxy.MinResumeBuffer || o.resumeBuffer > 64<<20 {
		return fmt.Errorf("--resume-buffer %d: must be from 64 KiB to 64 MiB (it is kept for every resumable session)", o.resumeBuffer)
	}
	if o.maxAdmissions < 0 {
		return fmt.Errorf("--max-admissions %d: must not be negative (0 follows --max-sessions)", o.maxAdmissions)
	}
	if o.resumeWindow < 0 {
		return fmt.Errorf("--resume-window %v: must not be negative (0 turns resume off)", o.resumeWindow)
	}
	if o.audience == hmac.AdminAudience {
		return fmt.Errorf("--audience %q is the admin tokens' audience: session and admin tokens must never be interchangeable", o.audience)
	}
	var adminVerifier *hmac.AdminVerifier
	if o.adminListen != "" {
		adminVerifier, err = hmac.NewAdminVerifier(hmac.AdminVerifierOptions{Keys: keyring, Leeway: o.leeway, MaxTTL: o.adminMaxTTL})
		if err != nil {
			return fmt.Errorf("admin verifier: %w", err)
		}
	}
	tel, err := newTelemetry(ctx, keyring.RegisterMetrics, tlsMetrics(tlsReloader))
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.shutdown(shutdownCtx)
	}()
	exitNotice, err := proxy.ParseExitNotice(o.rec.exitNotice)
	if err != nil {
		return fmt.Errorf("--exit-notice: %w", err)
	}
	var srvRef atomic.Pointer[proxy.Server]
	recCtx, stopRecorder := context.WithCancel(ctx)
	recorder, err := o.rec.recorder(recCtx, log, func() {
		if s := srvRef.Load(); s != nil {
			s.RecordingStored()
		}
	})
	if err != nil {
		stopRecorder()
		return err
	}
	// An upload under way when the proxy stops stays in the spool and is
	// sent on the next start.
	defer recorder.Wait()
	defer stopRecorder()
	srv, err := proxy.New(proxy.Config{
		Recorder:              recorder,
		Version:               version,
		Impersonate:           o.rec.impersonate,
		Access:                dialer,
		ExitNotice:            exitNotice,
		MeterProvider:         tel.meters,
		TracerProvider:        tel.tracers,
		Verifier:              verifier,
		Executor:              dialer,
		Pods:                  dialer,
		NodeName:              o.nodeName,
		MaxFrameSize:          o.maxFrameSize,
		FrameRelay:            o.frameRelay == "auto",
		MaxMessageSize:        o.maxMessageSize,
		MaxSessions:           o.maxSessions,
		MaxAdmissions:         o.maxAdmissions,
		MaxSessionsPerSubject: o.maxPerSubject,
		ObserverScrollback:    disabledIfZero(o.observerBack),
		QuietObservers:        !o.observerNotice,
		ResumeWindow:          disabledIfZero(o.resumeWindow),
		ResumeBuffer:          o.resumeBuffer,
		MaxLifetime:           disabledIfZero(o.maxLifetime),
		IdleTimeout:           disabledIfZero(o.idleTimeout),
		PingInterval:          disabledIfZero(o.pingInterval),
		AllowedOrigins:        splitList(o.allowedOrigins),
		Namespaces:            namespaces,
		Ready:                 keyring.Ready,
		Logger:                log,
	})
	if err != nil {
		return err
	}
	srvRef.Store(srv)

	if o.revocations != "" {
		rf, err := srv.WatchRevocations(o.revocations, log)
		if err != nil {
			return err
		}
		rfCtx, stopRF := context.WithCancel(context.Background())
		rfDone := make(chan error, 1)
		go func() { rfDone <- rf.Run(rfCtx) }()
		defer func() { stopRF(); <-rfDone }()
	}

	keyringCtx, stopKeyring := context.WithCancel(context.Background())
	keyringDone := make(chan error, 1)
	go func() { keyringDone <- keyring.Run(keyringCtx) }()
	defer func() { stopKeyring(); <-keyringDone }()
	defer runTLS(tlsReloader)()

	// Every port is bound before any serves, so a port in use stops the
	// start with nothing half running.
	session, err := o.openPort("sessions", o.listen, srv, tlsReloader, log, tel.meters)
	if err != nil {
		return err
	}
	ports := []*port{session}
	defer func() {
		for _, p := range ports {
			p.ln.Close()
		}
	}()
	var health, admin *port
	if o.healthListen != "" {
		if health, err = o.openPort("health", o.healthListen, healthMux(srv, tel.metricsHandler), nil, log, tel.meters); err != nil {
			return err
		}
		ports = append(ports, health)
	}
	if o.adminListen != "" {
		// The session port's TLS (and client certificates, when required)
		// apply to the admin port too.
		if admin, err = o.openPort("admin", o.adminListen, srv.AdminHandler(adminVerifier), tlsReloader, log, tel.meters); err != nil {
			return err
		}
		ports = append(ports, admin)
	}
	errc := make(chan error, len(ports))
	for _, p := range ports {
		go func() { errc <- p.srv.Serve(p.ln) }()
	}
	// Operators and the chart read liveness from this line: log it only
	// once the sockets accept connections.
	log.Info("listening", "address", session.addr(), "health_address", health.addr(), "admin_address", admin.addr(),
		"node", o.nodeName, "exec_transport", string(transport), "version", version)

	select {
	case err := <-errc:
		return fmt.Errorf("server stopped: %w", err)
	case <-ctx.Done():
	}
	log.Info("draining", "grace", o.shutdownGrace.String(), "active_sessions", srv.ActiveSessions())
	// Readiness turns false and new upgrades get 503 at once; the listener
	// stays open through the grace so clients get that answer, not a reset.
	graceCtx, cancel := context.WithTimeout(context.Background(), o.shutdownGrace)
	defer cancel()
	srv.Drain(graceCtx)
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	_ = session.srv.Shutdown(shutdownCtx)
	for _, p := range ports[1:] {
		_ = p.srv.Shutdown(context.Background())
	}
	log.Info("stopped")
	return nil
}

// port is one of serve's listeners with its HTTP server.
type port struct {
	ln  net.Listener
	srv *http.Server
}

// openPort binds addr, bounds its pending connections and serves TLS on it
// when tlsReloader is set.
func (o serveOptions) openPort(name, addr string, h http.Handler, tlsReloader *tlsreload.Reloader, log *slog.Logger, meters metric.MeterProvider) (*port, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	lim, err := proxy.NewConnLimiter(name, o.maxPending, log, meters)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &port{ln: wrapTLS(lim.Listener(ln), tlsReloader), srv: newHTTPServer(h, log, o.readHeaderTO, o.httpIdleTO, lim)}, nil
}

// addr is the bound address; empty for a port that is off.
func (p *port) addr() string {
	if p == nil {
		return ""
	}
	return p.ln.Addr().String()
}

// healthMux serves probes and metrics on their own plain-HTTP port, so
// they work even when the session port requires client certificates.
func healthMux(srv *proxy.Server, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", srv)
	mux.Handle("GET /readyz", srv)
	mux.Handle("GET /metrics", metrics)
	return mux
}

// disabledIfZero maps the command line's "0 disables" to the proxy
// package's convention, where zero means the default and negative disables.
func disabledIfZero[T int | time.Duration](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
