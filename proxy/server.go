package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/recording"
)

// TokenVerifier checks session tokens and spends them (single use). The
// server calls Check first and Consume only once every other check has
// passed and a session slot is held, so that a refusal that is not the
// token's fault (scope, node, pod, limits) does not burn it. Consume must
// succeed for exactly one caller per token. *hmac.Verifier implements it.
type TokenVerifier interface {
	Check(token string) (*hmac.Claims, error)
	Consume(claims *hmac.Claims) error
}

// Executor opens the exec or attach that a session bridges to.
type Executor interface {
	Stream(ctx context.Context, t exec.Target, s exec.Streams) (exec.Result, error)
}

// PodGetter looks the target pod up before the upgrade, so that a missing
// pod, a pod on another node or a missing container is refused with an HTTP
// status the client can act on instead of an error after the upgrade.
type PodGetter interface {
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// Defaults for Config fields left zero.
const (
	DefaultMaxFrameSize   = 4096 // guacd reads at most 4096 bytes per frame
	DefaultMaxMessageSize = 64 << 10
	DefaultWriteTimeout   = 60 * time.Second
	DefaultCloseTimeout   = 5 * time.Second
	DefaultMaxSessions    = 512
	DefaultMaxLifetime    = 8 * time.Hour
	DefaultIdleTimeout    = 30 * time.Minute
	DefaultPingInterval   = 30 * time.Second
)

// Config configures a Server. Verifier and Executor are required.
type Config struct {
	Verifier TokenVerifier
	Executor Executor
	Pods     PodGetter // optional; nil skips the pod check
	// NodeName is this proxy's node. Tokens with a node claim must match it,
	// and with Pods set, the target pod must be scheduled on it.
	NodeName string
	// MaxFrameSize bounds every frame sent to the client, channel byte
	// included. Default DefaultMaxFrameSize; minimum 64.
	MaxFrameSize int
	// FrameRelay relays the upstream's frames without client-go's
	// demultiplexer when the Executor is a FrameStreamer (framerelay.go).
	FrameRelay bool
	// MaxMessageSize bounds an inbound message; larger ones close the
	// connection with 1009. Default DefaultMaxMessageSize.
	MaxMessageSize int64
	// WriteTimeout bounds one write to a client that stopped reading: a
	// frame, or the frames of one chunk of output sent together.
	WriteTimeout time.Duration
	// MaxSessions bounds concurrent sessions; more get 503 before the
	// upgrade. Default DefaultMaxSessions.
	MaxSessions int
	// MaxAdmissions bounds the requests in admission at once (the checks
	// before the upgrade, which wait on the API server); more get 429 with
	// Retry-After. A request in admission is not a pending connection (see
	// ConnLimiter): it is answered, never evicted. Default MaxSessions.
	MaxAdmissions int
	// MaxSessionsPerSubject bounds concurrent sessions of one token sub;
	// more get 429 before the upgrade. Zero or negative: no bound.
	MaxSessionsPerSubject int
	// ObserverScrollback is how many bytes of recent output an observer
	// (a token with mode observe) receives on joining. Default
	// DefaultObserverScrollback; negative keeps none.
	ObserverScrollback int
	// ResumeWindow is how long a session of a resumable token survives an
	// abnormal drop of its client, waiting for a resume (resume.go).
	// Default DefaultResumeWindow; negative turns resume off.
	ResumeWindow time.Duration
	// ResumeBuffer bounds the output a resumable session keeps for a
	// resume's replay. Default DefaultResumeBuffer; at least MinResumeBuffer.
	ResumeBuffer int
	// QuietObservers: the session's user is not told in the terminal when
	// an observer joins or leaves.
	QuietObservers bool
	// MaxLifetime ends a session after this long. Default
	// DefaultMaxLifetime; negative disables.
	MaxLifetime time.Duration
	// IdleTimeout ends a session with no data either way for this long.
	// Pings do not count. Default DefaultIdleTimeout; negative disables.
	IdleTimeout time.Duration
	// PingInterval is how often the server pings; a client that answers
	// no ping (and sends nothing) for two intervals is closed. Default
	// DefaultPingInterval; negative disables.
	PingInterval time.Duration
	// AllowedOrigins lists the Origin values accepted besides a missing
	// Origin and one whose host equals the request's Host (guacd sends
	// "http://{hostname}"). "*" accepts any.
	AllowedOrigins []string
	// Namespaces is the operator's namespace policy (policy.go); the zero
	// value allows every namespace.
	Namespaces NamespacePolicy
	// LogBurst and LogInterval bound the "session rejected" lines of one
	// reason: a burst of LogBurst, then one per LogInterval; the rest are
	// counted (k8s_ws_proxy.log.suppressed) and the next line written says
	// how many it stands for. Defaults DefaultLogBurst and
	// DefaultLogInterval; a negative LogBurst logs every refusal.
	LogBurst    int
	LogInterval time.Duration
	// Impersonate makes the pod lookup and the exec act as the token's
	// user (sub, groups) at the API server; Access, when set, checks that
	// user's exec right before the upgrade.
	Impersonate bool
	Access      AccessChecker
	// ExitNotice: when to write the exit code to the terminal too; the
	// zero value is never; the binary's default is ExitNoticeDefault.
	ExitNotice ExitNotice
	// Recorder records sessions (asciicast); nil or mode off records none.
	Recorder *recording.Recorder
	// Version is the proxy's version, for recording headers.
	Version string
	// Ready reports whether the proxy can authorise sessions (keys loaded).
	Ready  func() bool
	Logger *slog.Logger
	// MeterProvider and TracerProvider default to the OpenTelemetry globals.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
}

// Server is the proxy's HTTP handler and session registry.
type Server struct {
	cfg      Config
	log      *slog.Logger
	upgrader websocket.Upgrader
	mux      *http.ServeMux
	tel      *telemetry
	recTel   *recordingInstruments

	rejectLog *logLimiter

	draining  atomic.Bool
	admitting atomic.Int64 // requests in admission (enterAdmission)
	mu        sync.Mutex
	sessions  map[*session]struct{}
	wg        sync.WaitGroup
	// revocations are the subjects and token ids refused (revocations.go).
	revocations atomic.Pointer[Revocations]
	// endedResumables say why resumable sessions that are gone ended
	// (resume.go); under mu.
	endedResumables map[string]endedResumable
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Verifier == nil || cfg.Executor == nil {
		return nil, errors.New("proxy: Verifier and Executor are required")
	}
	// Zero fields take their defaults.
	cfg.MaxFrameSize = cmp.Or(cfg.MaxFrameSize, DefaultMaxFrameSize)
	if cfg.MaxFrameSize < 64 {
		return nil, fmt.Errorf("proxy: MaxFrameSize %d is below the minimum of 64", cfg.MaxFrameSize)
	}
	cfg.MaxMessageSize = cmp.Or(cfg.MaxMessageSize, DefaultMaxMessageSize)
	cfg.MaxSessions = cmp.Or(cfg.MaxSessions, DefaultMaxSessions)
	if cfg.MaxAdmissions <= 0 {
		cfg.MaxAdmissions = cfg.MaxSessions
	}
	cfg.LogBurst = cmp.Or(cfg.LogBurst, DefaultLogBurst)
	if cfg.LogInterval <= 0 {
		cfg.LogInterval = DefaultLogInterval
	}
	// Timers (MaxLifetime, IdleTimeout and PingInterval are off when negative).
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, DefaultWriteTimeout)
	cfg.MaxLifetime = cmp.Or(cfg.MaxLifetime, DefaultMaxLifetime)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.PingInterval = cmp.Or(cfg.PingInterval, DefaultPingInterval)
	if cfg.Ready == nil {
		cfg.Ready = func() bool { return true }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tel, err := newTelemetry(cfg.MeterProvider, cfg.TracerProvider)
	if err != nil {
		return nil, fmt.Errorf("proxy: telemetry: %w", err)
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		tel:      tel,
		sessions: make(map[*session]struct{}),

		rejectLog: newLogLimiter(cfg.LogBurst, cfg.LogInterval),
	}
	s.recTel = newRecordingInstruments(cfg.MeterProvider)
	s.upgrader = websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: cfg.MaxFrameSize + 16,
		// Idle sessions dominate a shell gateway's memory: share write
		// buffers instead of keeping one per connection.
		WriteBufferPool: &sync.Pool{},
		// Origin is checked by the caller's policy, not by gorilla's
		// same-origin default, which would refuse guacd's "http://host"
		// over TLS.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/{namespace}/pods/{pod}/exec", func(w http.ResponseWriter, r *http.Request) { s.serveSession(w, r, false) })
	mux.HandleFunc("GET /api/v1/namespaces/{namespace}/pods/{pod}/attach", func(w http.ResponseWriter, r *http.Request) { s.serveSession(w, r, true) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", s.serveReadyz)
	s.registerKubectl(mux) // discovery, GET pod, SPDY refusals, 404 Status for the rest
	s.mux = mux
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Ready reports whether the proxy accepts new sessions.
func (s *Server) Ready() bool { return !s.draining.Load() && s.cfg.Ready() }

func (s *Server) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case s.draining.Load():
		http.Error(w, "draining", http.StatusServiceUnavailable)
	case !s.cfg.Ready():
		http.Error(w, "no valid HMAC key loaded", http.StatusServiceUnavailable)
	default:
		fmt.Fprintln(w, "ok")
	}
}

// ActiveSessions is the number of sessions currently bridged.
func (s *Server) ActiveSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Drain stops accepting sessions (new upgrades get 503), waits for live
// sessions to end until ctx is done, then ends the rest with a status message
// and a close frame. It returns once every session has finished.
func (s *Server) Drain(ctx context.Context) {
	s.draining.Store(true)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	// Terminate outside the registry lock and all at once: each termination
	// writes to its client and may wait out a write deadline behind a slow
	// one, which must delay neither the others nor sessions unregistering.
	s.mu.Lock()
	live := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		live = append(live, sess)
	}
	s.mu.Unlock()
	for _, sess := range live {
		go sess.terminate("shutdown", websocket.CloseGoingAway, "session closed: the proxy is shutting down")
	}
	<-done
}
