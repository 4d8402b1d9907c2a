package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	// MaxMessageSize bounds an inbound message; larger ones close the
	// connection with 1009. Default DefaultMaxMessageSize.
	MaxMessageSize int64
	// WriteTimeout bounds one write to a client that stopped reading: a
	// frame, or the frames of one chunk of output sent together.
	WriteTimeout time.Duration
	// MaxSessions bounds concurrent sessions; more get 503 before the
	// upgrade. Default DefaultMaxSessions.
	MaxSessions int
	// MaxSessionsPerSubject bounds concurrent sessions of one token sub;
	// more get 429 before the upgrade. Zero or negative: no bound.
	MaxSessionsPerSubject int
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
	// zero value is never (auto: tty sessions on v4 or older, i.e. guacd).
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

	draining atomic.Bool
	mu       sync.Mutex
	sessions map[*session]struct{}
	wg       sync.WaitGroup
	// revocations are the subjects and token ids refused (revocations.go).
	revocations atomic.Pointer[Revocations]
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Verifier == nil || cfg.Executor == nil {
		return nil, errors.New("proxy: Verifier and Executor are required")
	}
	if cfg.MaxFrameSize == 0 {
		cfg.MaxFrameSize = DefaultMaxFrameSize
	}
	if cfg.MaxFrameSize < 64 {
		return nil, fmt.Errorf("proxy: MaxFrameSize %d is below the minimum of 64", cfg.MaxFrameSize)
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.LogBurst == 0 {
		cfg.LogBurst = DefaultLogBurst
	}
	if cfg.LogInterval <= 0 {
		cfg.LogInterval = DefaultLogInterval
	}
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

// originAllowed applies the origin policy. Browsers always send Origin, so
// without this check any web page could open sessions with a token it got
// hold of; non-browser clients (client-go) send none.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// originRejection refuses a foreign Origin. The client knows what it sent;
// the log gets a bounded, redacted copy (an Origin is client input like any
// other, and could carry a token).
func originRejection(r *http.Request) *rejection {
	rej := reject(http.StatusForbidden, "origin_not_allowed", "the request's Origin is not allowed (see --allowed-origins)")
	rej.detail = "Origin " + strconv.Quote(redactProtocols([]string{r.Header.Get("Origin")})[0])
	return rej
}

// logRejection logs a refusal, at most a burst of lines per reason and
// then one per interval (an anonymous client must not be able to fill the
// node's disk), and counts it, and the lines it did not write, in the
// metrics.
func (s *Server) logRejection(ctx context.Context, sid string, rej *rejection, r *http.Request) {
	s.tel.rejected(ctx, rej.reason, rej.status, rej.auth)
	ok, suppressed := s.rejectLog.allow(rej.reason, time.Now())
	if !ok {
		s.tel.logSuppressed(ctx, rej.reason)
		return
	}
	attrs := []any{"sid", sid, "event", "rejected", "status", rej.status,
		"reason", rej.reason, "detail", rej.message, "remote", r.RemoteAddr}
	if rej.detail != "" {
		attrs = append(attrs, "error", rej.detail)
	}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	s.log.Warn("session rejected", attrs...)
}

// newSessionID returns a random id for requests whose token carries no sid,
// and for requests refused before a token could be read.
func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// writeRejection answers a refused upgrade the way the API server does: a
// metav1.Status body with the code, so kubectl-style clients print a reason.
func writeRejection(w http.ResponseWriter, rej *rejection) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  rej.message,
		Reason:   metav1.StatusReason(rejectionReason(rej.status)),
		Code:     int32(rej.status),
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if rej.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(rej.status)
	_ = json.NewEncoder(w).Encode(st)
}

func rejectionReason(code int) metav1.StatusReason {
	switch code {
	case http.StatusUnauthorized:
		return metav1.StatusReasonUnauthorized
	case http.StatusForbidden:
		return metav1.StatusReasonForbidden
	case http.StatusNotFound:
		return metav1.StatusReasonNotFound
	case http.StatusServiceUnavailable:
		return metav1.StatusReasonServiceUnavailable
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
	case http.StatusTooManyRequests:
		return metav1.StatusReasonTooManyRequests
	}
	return metav1.StatusReasonUnknown
}

// tokenRejection maps a verification failure to its HTTP status: the token
// itself is bad (401), or the proxy cannot take more single-use tokens now
// (503: fail closed, retry later).
func tokenRejection(err error) *rejection {
	reason := hmac.ReasonOf(err)
	if reason == "" {
		reason = "malformed"
	}
	status := http.StatusUnauthorized
	if reason == "replay_cache_full" {
		status = http.StatusServiceUnavailable
	}
	return &rejection{status: status, reason: string(reason), message: "session token rejected: " + string(reason), auth: true}
}

// checkPod refuses a target that does not exist, runs elsewhere or lacks the
// container, before anything is upgraded.
func (s *Server) checkPod(ctx context.Context, c *hmac.Claims) *rejection {
	if s.cfg.Pods == nil {
		return nil
	}
	pod, err := s.cfg.Pods.GetPod(ctx, c.Namespace, c.Pod)
	switch {
	case apierrors.IsNotFound(err):
		return reject(http.StatusNotFound, "pod_not_found", "pod %s/%s not found", c.Namespace, c.Pod)
	case apierrors.IsForbidden(err) && s.cfg.Impersonate:
		// The user (or the proxy's right to impersonate them) was refused:
		// pass the API server's reason on.
		return reject(http.StatusForbidden, "forbidden", "%s", err.Error())
	case apierrors.IsForbidden(err):
		return reject(http.StatusBadGateway, "pod_lookup_forbidden", "the proxy is not allowed to get pod %s/%s", c.Namespace, c.Pod)
	case err != nil:
		// The error names the API server's address: the log gets it, the
		// client only what failed.
		rej := reject(http.StatusBadGateway, "pod_lookup_failed", "looking up pod %s/%s failed; the proxy could not reach the API server", c.Namespace, c.Pod)
		rej.detail = err.Error()
		return rej
	}
	if s.cfg.NodeName != "" && pod.Spec.NodeName != s.cfg.NodeName {
		return reject(http.StatusForbidden, "wrong_node", "pod %s/%s is not on this node", c.Namespace, c.Pod)
	}
	if c.Container != "" {
		found := false
		for _, ct := range pod.Spec.Containers {
			if ct.Name == c.Container {
				found = true
				break
			}
		}
		if !found {
			return reject(http.StatusNotFound, "container_not_found", "container %q not found in pod %s/%s", c.Container, c.Namespace, c.Pod)
		}
	}
	return nil
}
