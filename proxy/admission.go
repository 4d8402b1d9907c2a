package proxy

// Admission: every check an upgrade request passes before it becomes a
// session, in the order it runs. serveSession calls admit, then register;
// each refusal is a *rejection, answered with a metav1.Status before the
// upgrade and logged with its reason (never the token).

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// grant is an admitted request: everything its session is built from.
type grant struct {
	// ctx is the request's: its span, and the identity the pod lookup, the
	// access check and the exec act as.
	ctx    context.Context
	sid    string
	claims *hmac.Claims
	target exec.Target
	// protocol is the negotiated subprotocol, "" for a client that offered
	// none (the answer then carries no Sec-WebSocket-Protocol header).
	protocol string
}

// admit runs the checks that need only the request, in this order: the
// proxy's state, the Origin, the upgrade itself, the request's form and
// token sources, the token, the token's scope against the request, the
// namespace policy, the subprotocol, the pod, and the user's exec right.
// The token is checked here and spent by register.
func (s *Server) admit(ctx context.Context, r *http.Request, attach bool) (*grant, *rejection) {
	if s.draining.Load() {
		return nil, rejectDraining()
	}
	if !s.originAllowed(r) {
		return nil, originRejection(r)
	}
	if !websocket.IsWebSocketUpgrade(r) {
		return nil, reject(http.StatusBadRequest, "not_websocket", "this endpoint only serves WebSocket upgrades (Kubernetes channel protocol)")
	}
	req, rej := parseExecRequest(r, attach)
	if rej != nil {
		return nil, rej
	}
	claims, rej := s.checkToken(ctx, req.token)
	if rej != nil {
		return nil, rej
	}
	// From here on a refusal is logged under the token's session id.
	sid := sessionIDOf(claims)
	refuse := func(rej *rejection) (*grant, *rejection) {
		rej.sid = sid
		return nil, rej
	}
	if rej := req.checkScope(claims, s.cfg.NodeName); rej != nil {
		return refuse(rej)
	}
	if claims.Mode == "" {
		if rej := s.checkResume(claims); rej != nil {
			return refuse(rej)
		}
		if rej := s.checkResumeRequest(claims, req.query); rej != nil {
			return refuse(rej)
		}
	}
	if rej := s.cfg.Namespaces.check(claims.Namespace); rej != nil {
		return refuse(rej)
	}
	protocol, err := negotiateProtocol(req.protocols)
	if err != nil {
		return refuse(reject(http.StatusBadRequest, "unsupported_subprotocol", "%v", err))
	}
	target := exec.Target{
		Namespace: claims.Namespace, Pod: claims.Pod, Container: claims.Container, Command: claims.Command,
		TTY: claims.TTY, Stdin: claims.Stdin, Stdout: true,
		Stderr: exec.SeparateStderr(claims.TTY, req.stderrRequested()),
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("k8s_ws_proxy.sid", sid), attribute.String("k8s.namespace.name", claims.Namespace),
		attribute.String("k8s.pod.name", claims.Pod), attribute.String("k8s.container.name", claims.Container))
	ctx = s.withIdentity(ctx, claims, sid)
	if rej := s.checkPod(ctx, claims); rej != nil {
		return refuse(rej)
	}
	if rej := s.checkImpersonation(ctx, claims); rej != nil {
		return refuse(rej)
	}
	return &grant{ctx: ctx, sid: sid, claims: claims, target: target, protocol: protocol}, nil
}

// register admits sess for good: it takes a slot (the proxy's and the
// subject's limits, revocations), opens the recording, and spends the
// token, last, so that a refusal that is not the token's fault leaves it
// usable for a retry. On a refusal sess holds no slot.
func (s *Server) register(sess *session) *rejection {
	if rej := s.takeSlot(sess); rej != nil {
		rej.sid = sess.id
		return rej
	}
	if rej := sess.openRecording(sess.proto.name); rej != nil {
		s.unregister(sess)
		rej.sid = sess.id
		return rej
	}
	if err := s.cfg.Verifier.Consume(sess.claims); err != nil {
		sess.discardRecording()
		s.unregister(sess)
		rej := tokenRejection(err)
		rej.sid = sess.id
		return rej
	}
	return nil
}

// takeSlot applies the limits and the revocations under the registry lock:
// a session is then either refused here or ended by SetRevocations.
func (s *Server) takeSlot(sess *session) *rejection {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return rejectDraining()
	}
	if len(s.sessions) >= s.cfg.MaxSessions {
		return rejectTooMany(s.cfg.MaxSessions)
	}
	if rej := s.admitSubjectLocked(sess.claims); rej != nil {
		return rej
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	return nil
}

// releaseSlot takes sess out of the registry: the limits, the listings,
// the revocations and a drain's terminations see it no more. A session
// calls it once its connection is closed, before its close line and
// telemetry: on a loaded node those can wait seconds for the CPU, and a
// slot held meanwhile refuses a client whose predecessor has long gone.
func (s *Server) releaseSlot(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[sess]; !ok {
		return
	}
	delete(s.sessions, sess)
	s.forgetSessionLocked(sess) // resume.go
}

// unregister releases sess's slot if it still holds one and ends its part
// in a drain's wait, which therefore includes the close line.
func (s *Server) unregister(sess *session) {
	s.releaseSlot(sess)
	s.wg.Done()
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

// execRequest is what the URL and headers of an upgrade request say.
type execRequest struct {
	namespace  string
	podSegment string // the {pod} path segment: a pod name, or guacd's token
	attach     bool   // .../attach rather than .../exec
	query      url.Values
	opts       corev1.PodExecOptions // the query as the API server reads it
	token      string
	protocols  []string // offered channel protocols, bearer entry removed
}

// parseExecRequest reads the path values, query and token sources. Every
// token source that is present must carry the same token: two different
// tokens in one request means a confused or malicious client.
func parseExecRequest(r *http.Request, attach bool) (*execRequest, *rejection) {
	req := &execRequest{
		namespace:  r.PathValue("namespace"),
		podSegment: r.PathValue("pod"),
		attach:     attach,
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, reject(http.StatusBadRequest, "bad_query", "query string is malformed")
	}
	req.query = q
	if err := execParameterCodec.DecodeParameters(q, corev1.SchemeGroupVersion, &req.opts); err != nil {
		return nil, reject(http.StatusBadRequest, "bad_query", "query string is malformed")
	}

	protocols, bearerProtos, err := splitOfferedProtocols(r.Header.Values("Sec-WebSocket-Protocol"))
	if err != nil {
		return nil, reject(http.StatusBadRequest, "bad_subprotocol", "%v", err)
	}
	req.protocols = protocols

	var tokens []string
	// Every Authorization header counts: a second one is a second place.
	for _, h := range r.Header.Values("Authorization") {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return nil, reject(http.StatusUnauthorized, string(hmac.ReasonMalformed), "Authorization header is not a Bearer token")
		}
		tokens = append(tokens, strings.TrimSpace(tok))
	}
	tokens = append(tokens, bearerProtos...)
	if vs, ok := q["token"]; ok {
		for _, v := range vs {
			if v == "" {
				return nil, reject(http.StatusUnauthorized, string(hmac.ReasonMalformed), "token query parameter is empty")
			}
			tokens = append(tokens, v)
		}
	}
	if looksLikeToken(req.podSegment) {
		tokens = append(tokens, req.podSegment)
	}
	if len(tokens) == 0 {
		return nil, reject(http.StatusUnauthorized, "missing_token",
			"no session token: send it as a Bearer token, a base64url.bearer.authorization.k8s.io subprotocol, ?token=, or the pod path segment")
	}
	for _, t := range tokens[1:] {
		if t != tokens[0] {
			return nil, reject(http.StatusBadRequest, "conflicting_tokens", "the request carries different tokens in different places")
		}
	}
	req.token = tokens[0]
	return req, nil
}

// looksLikeToken tells a compact JWS in the pod segment (guacd can carry the
// token nowhere else) from a pod name. Pod names are DNS subdomains and may
// contain dots, but never two dots around a base64url JSON header, which
// always begins "eyJ" ('{"').
func looksLikeToken(s string) bool {
	return strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") == 2
}

// splitOfferedProtocols separates a bearer token carried as a subprotocol
// (browsers cannot set headers) from the channel protocols offered.
func splitOfferedProtocols(values []string) (protocols []string, bearer []string, err error) {
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			if enc, ok := strings.CutPrefix(p, bearerProtocolPrefix); ok {
				tok, derr := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
				if derr != nil || len(tok) == 0 {
					return nil, nil, errors.New("bearer token subprotocol is not valid base64url")
				}
				bearer = append(bearer, string(tok))
				continue
			}
			protocols = append(protocols, p)
		}
	}
	return protocols, bearer, nil
}

// checkToken verifies the token without spending it (register does that).
func (s *Server) checkToken(ctx context.Context, token string) (*hmac.Claims, *rejection) {
	_, span := s.tel.tracer.Start(ctx, "k8s_ws_proxy.token.verify")
	defer span.End()
	claims, err := s.cfg.Verifier.Check(token)
	if err != nil {
		span.SetStatus(codes.Error, string(hmac.ReasonOf(err)))
		return nil, tokenRejection(err)
	}
	return claims, nil
}

// tokenRejection maps a verification failure to its HTTP status: the token
// itself is bad (401), or the proxy cannot take more single-use tokens now
// (503: fail closed, retry later).
func tokenRejection(err error) *rejection {
	reason := hmac.ReasonOf(err) // never "" for an error
	status := http.StatusUnauthorized
	if reason == hmac.ReasonReplayCacheFull {
		status = http.StatusServiceUnavailable
	}
	return &rejection{status: status, reason: string(reason), message: "session token rejected: " + string(reason), auth: true}
}

// sessionIDOf is the session id a request with these claims is logged
// under: the token's sid, or a random one when it has none (or one too
// long for a log line).
func sessionIDOf(c *hmac.Claims) string {
	if c.SID == "" || len(c.SID) > 64 {
		return newSessionID()
	}
	return c.SID
}

// newSessionID returns a random id for requests whose token carries no sid,
// and for requests refused before a token could be read.
func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// checkScope holds the request against the signed claims. The claims are
// authoritative; anything the request also says must agree with them.
func (req *execRequest) checkScope(c *hmac.Claims, nodeName string) *rejection {
	if errs := validation.IsDNS1123Label(c.Namespace); len(errs) > 0 {
		return reject(http.StatusForbidden, "bad_claims", "token namespace is not a valid namespace name")
	}
	if errs := validation.IsDNS1123Subdomain(c.Pod); len(errs) > 0 {
		return reject(http.StatusForbidden, "bad_claims", "token pod is not a valid pod name")
	}
	if c.Container != "" {
		if errs := validation.IsDNS1123Label(c.Container); len(errs) > 0 {
			return reject(http.StatusForbidden, "bad_claims", "token container is not a valid container name")
		}
	}
	if c.Node != "" && c.Node != nodeName {
		return reject(http.StatusForbidden, "wrong_node", "token is for another node")
	}
	if req.namespace != c.Namespace {
		return reject(http.StatusForbidden, "scope_mismatch", "namespace in the path does not match the token")
	}
	if !looksLikeToken(req.podSegment) && req.podSegment != c.Pod {
		return reject(http.StatusForbidden, "scope_mismatch", "pod in the path does not match the token")
	}
	if req.attach != (len(c.Command) == 0) {
		if req.attach {
			return reject(http.StatusForbidden, "scope_mismatch", "token grants exec of a command, not attach")
		}
		return reject(http.StatusForbidden, "scope_mismatch", "token grants attach, not exec")
	}
	if vs, ok := req.query["container"]; ok {
		if len(vs) != 1 || vs[0] != c.Container {
			return reject(http.StatusForbidden, "scope_mismatch", "container in the query does not match the token")
		}
	}
	if vs, ok := req.query["command"]; ok {
		// guacd 1.6.0 sends the whole command line as one value, its main
		// branch one value per word: compare the words joined by spaces.
		if strings.Join(vs, " ") != strings.Join(c.Command, " ") {
			return reject(http.StatusForbidden, "scope_mismatch", "command in the query does not match the token")
		}
	}
	for _, f := range []struct {
		name         string
		query, claim bool
	}{{"tty", req.opts.TTY, c.TTY}, {"stdin", req.opts.Stdin, c.Stdin}} {
		if _, ok := req.query[f.name]; ok && f.query != f.claim {
			return reject(http.StatusForbidden, "scope_mismatch", "%s in the query does not match the token", f.name)
		}
	}
	return nil
}

// stderrRequested reports whether the client asks for stderr; one that
// never says (guacd) gets it, so that no output is dropped.
// exec.SeparateStderr then applies the tty rule.
func (req *execRequest) stderrRequested() bool {
	if _, ok := req.query["stderr"]; !ok {
		return true
	}
	return req.opts.Stderr
}

// check is the namespace policy's admission step.
func (p NamespacePolicy) check(ns string) *rejection {
	if p.Allows(ns) {
		return nil
	}
	return reject(http.StatusForbidden, "namespace_denied", "namespace %q is not open to sessions through this proxy (its --allowed-namespaces/--denied-namespaces policy)", ns)
}

// negotiateProtocol picks the newest supported protocol among those offered.
// A client that offers none (a bare WebSocket) gets channel.k8s.io, as the API
// server does; its response then carries no Sec-WebSocket-Protocol header.
func negotiateProtocol(offered []string) (name string, err error) {
	if len(offered) == 0 {
		return "", nil
	}
	for _, want := range protocolPreference {
		for _, o := range offered {
			if o == want {
				return want, nil
			}
		}
	}
	return "", fmt.Errorf("%w: offered %q, supported %q", errUnsupportedProtocol, redactProtocols(offered), protocolPreference)
}

// checkPod refuses a target that does not exist, runs elsewhere or lacks the
// container, before anything is upgraded.
func (s *Server) checkPod(ctx context.Context, c *hmac.Claims) *rejection {
	if s.cfg.Pods == nil {
		return nil
	}
	_, rej := s.lookupPod(ctx, c, s.cfg.Impersonate)
	return rej
}

// lookupPod reads the token's pod with checkPod's checks; kubectl's GET of
// the pod uses it too. impersonated: ctx acts as the token's user, whose
// refusal by the API server is passed on.
func (s *Server) lookupPod(ctx context.Context, c *hmac.Claims, impersonated bool) (*corev1.Pod, *rejection) {
	pod, err := s.cfg.Pods.GetPod(ctx, c.Namespace, c.Pod)
	switch {
	case apierrors.IsNotFound(err):
		return nil, reject(http.StatusNotFound, "pod_not_found", "pod %s/%s not found", c.Namespace, c.Pod)
	case apierrors.IsForbidden(err) && impersonated:
		// The user (or the proxy's right to impersonate them) was refused:
		// pass the API server's reason on.
		return nil, reject(http.StatusForbidden, "forbidden", "%s", err.Error())
	case apierrors.IsForbidden(err):
		return nil, reject(http.StatusBadGateway, "pod_lookup_forbidden", "the proxy is not allowed to get pod %s/%s", c.Namespace, c.Pod)
	case err != nil:
		// The error names the API server's address: the log gets it, the
		// client only what failed.
		rej := reject(http.StatusBadGateway, "pod_lookup_failed", "looking up pod %s/%s failed; the proxy could not reach the API server", c.Namespace, c.Pod)
		rej.detail = err.Error()
		return nil, rej
	}
	if s.cfg.NodeName != "" && pod.Spec.NodeName != s.cfg.NodeName {
		return nil, reject(http.StatusForbidden, "wrong_node", "pod %s/%s is not on this node", c.Namespace, c.Pod)
	}
	if c.Container != "" && !slices.ContainsFunc(pod.Spec.Containers, func(ct corev1.Container) bool { return ct.Name == c.Container }) {
		return nil, reject(http.StatusNotFound, "container_not_found", "container %q not found in pod %s/%s", c.Container, c.Namespace, c.Pod)
	}
	return pod, nil
}

// checkImpersonation refuses, before the upgrade, a token without a user
// to impersonate and a user the API server would not let exec there, with
// the API server's reason, so that no process starts for them.
func (s *Server) checkImpersonation(ctx context.Context, c *hmac.Claims) *rejection {
	if !s.cfg.Impersonate {
		return nil
	}
	if c.Subject == "" {
		return reject(http.StatusForbidden, "no_subject", "the proxy impersonates the token's user, and the token has no sub claim")
	}
	if s.cfg.Access == nil {
		return nil
	}
	t := exec.Target{Namespace: c.Namespace, Pod: c.Pod, Container: c.Container, Command: c.Command}
	ok, why, err := s.cfg.Access.CanExec(ctx, t)
	if err != nil {
		return reject(http.StatusBadGateway, "access_review_failed", "asking the API server whether %q may exec failed: %v", c.Subject, err)
	}
	if !ok {
		verb := "exec into"
		if len(c.Command) == 0 {
			verb = "attach to"
		}
		msg := "user \"" + c.Subject + "\" may not " + verb + " pod " + c.Namespace + "/" + c.Pod
		if why != "" {
			msg += ": " + why
		}
		return reject(http.StatusForbidden, "forbidden", "%s", msg)
	}
	return nil
}

// rejection is a refusal before the upgrade: the HTTP status the client gets,
// a reason label for logs and metrics, and a message safe to show and log
// (it never contains the token).
type rejection struct {
	status  int
	reason  string
	message string
	auth    bool // the token itself was refused (counted as an auth failure)
	// detail is for the log only: what the client must not see (the
	// addresses in an API error), never the token.
	detail string
	// sid is the session id the refusal is logged under; "" before a
	// token was read (a random one is logged).
	sid string
	// retryAfter, in seconds, is sent as Retry-After and in the Status's
	// details (0: none, except 503's one second).
	retryAfter int
}

func (r *rejection) Error() string { return r.message }

func reject(status int, reason, format string, args ...any) *rejection {
	return &rejection{status: status, reason: reason, message: fmt.Sprintf(format, args...)}
}

// clientGone names a refusal that came after the client had left: a pod
// lookup or access review cut short by the request's context reads as the
// API server's failure, while the cause was the client's leaving (an
// impatient or overloaded client, or its connection evicted). Nobody reads
// the answer; the log and the metrics say what happened.
func clientGone(r *http.Request, rej *rejection) *rejection {
	if r.Context().Err() == nil {
		return rej
	}
	gone := *rej
	gone.reason = "client_gone"
	gone.detail = strings.TrimSuffix("the client left during admission; the refusal would have been "+rej.reason+": "+rej.detail, ": ")
	return &gone
}

func rejectDraining() *rejection {
	return reject(http.StatusServiceUnavailable, "draining", "the proxy is shutting down; retry on another instance")
}

func rejectTooMany(limit int) *rejection {
	return reject(http.StatusServiceUnavailable, "too_many_sessions", "the proxy is at its limit of %d concurrent sessions", limit)
}

// refuse logs, counts and answers a refused upgrade.
func (s *Server) refuse(ctx context.Context, w http.ResponseWriter, r *http.Request, rej *rejection) {
	sid := rej.sid
	if sid == "" {
		sid = newSessionID()
	}
	s.logRejection(ctx, sid, rej, r)
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(attribute.String("k8s_ws_proxy.sid", sid), attribute.String("k8s_ws_proxy.rejection", rej.reason),
		attribute.Int("http.response.status_code", rej.status))
	span.SetStatus(codes.Error, rej.reason)
	writeRejection(w, rej)
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

// writeRejection answers a refused request the way the API server does: a
// metav1.Status body with the code, so kubectl-style clients print a reason.
func writeRejection(w http.ResponseWriter, rej *rejection) {
	st := rej.body()
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	switch {
	case rej.retryAfter > 0:
		w.Header().Set("Retry-After", strconv.Itoa(rej.retryAfter))
	case rej.status == http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(rej.status)
	_ = json.NewEncoder(w).Encode(st)
}

// body is the rejection's body. apierrors has a constructor that keeps
// the message as it is for 400, 401 and 503; the others word the message
// around a resource, so those keep the message with statusReason's reason.
func (rej *rejection) body() metav1.Status {
	switch {
	case rej.status == http.StatusTooManyRequests && rej.retryAfter > 0:
		return apierrors.NewTooManyRequests(rej.message, rej.retryAfter).ErrStatus
	}
	switch rej.status {
	case http.StatusBadRequest:
		return apierrors.NewBadRequest(rej.message).ErrStatus
	case http.StatusUnauthorized:
		return apierrors.NewUnauthorized(rej.message).ErrStatus
	case http.StatusServiceUnavailable:
		return apierrors.NewServiceUnavailable(rej.message).ErrStatus
	}
	return metav1.Status{Status: metav1.StatusFailure, Message: rej.message, Reason: statusReason(rej.status), Code: int32(rej.status)}
}

// execParameterCodec reads an exec query exactly as the API server
// converts it into PodExecOptions: the same apimachinery conversion of
// each boolean (absent, "0" or "false" in any case is false; anything
// else, "yes" and the empty string included, is true; the first value
// counts), so a client the API server accepts is read the same here.
var execParameterCodec = func() runtime.ParameterCodec {
	scheme := runtime.NewScheme()
	scheme.AddKnownTypes(corev1.SchemeGroupVersion, &corev1.PodExecOptions{})
	// The API server's generated Convert_url_Values_To_v1_PodExecOptions
	// (k8s.io/kubernetes, not importable), field for field.
	err := scheme.AddConversionFunc((*url.Values)(nil), (*corev1.PodExecOptions)(nil), func(a, b any, s conversion.Scope) error {
		in, out := *a.(*url.Values), b.(*corev1.PodExecOptions)
		for _, f := range []struct {
			name string
			dst  *bool
		}{{"stdin", &out.Stdin}, {"stdout", &out.Stdout}, {"stderr", &out.Stderr}, {"tty", &out.TTY}} {
			vs := in[f.name]
			if err := runtime.Convert_Slice_string_To_bool(&vs, f.dst, s); err != nil {
				return err
			}
		}
		if vs := in["container"]; len(vs) > 0 {
			if err := runtime.Convert_Slice_string_To_string(&vs, &out.Container, s); err != nil {
				return err
			}
		}
		out.Command = in["command"]
		return nil
	})
	if err != nil {
		panic(err)
	}
	return runtime.NewParameterCodec(scheme)
}()

// admitSubjectLocked applies --max-sessions-per-subject and the
// revocations to a new session or observer; the caller holds s.mu. Tokens
// without a sub count as one subject, "". Observers count under their own
// sub.
func (s *Server) admitSubjectLocked(c *hmac.Claims) *rejection {
	if limit := s.cfg.MaxSessionsPerSubject; limit > 0 {
		n := 0
		for ss := range s.sessions {
			if ss.claims.Subject == c.Subject {
				n++
			}
			for _, o := range ss.observers() {
				if o.Subject == c.Subject {
					n++
				}
			}
		}
		if n >= limit {
			return reject(http.StatusTooManyRequests, "too_many_sessions_for_subject",
				"subject %q is at its limit of %d concurrent sessions", c.Subject, limit)
		}
	}
	if rv := s.revocations.Load(); rv != nil && rv.match(c) {
		return reject(http.StatusForbidden, "revoked", "the token's subject or id is revoked")
	}
	return nil
}

// checkObserve holds an observe token (mode observe) on its own. The
// observer's sub is its own (who watches); admitObserver then compares
// everything that says what runs with the watched session.
func checkObserve(c *hmac.Claims) *rejection {
	switch {
	case c.SID == "":
		return reject(http.StatusBadRequest, "observe_without_sid", "an observe token must name the session to observe in sid")
	case c.Stdin:
		return reject(http.StatusBadRequest, "observe_with_stdin", "an observe token must not grant stdin: observers are read-only")
	case c.Resumable || c.Resume != "":
		return reject(http.StatusBadRequest, "observe_with_resume", "an observe token cannot be resumable or resume a session")
	}
	return nil
}

// checkResume holds the resume claims on their own. With resume off
// (--resume-window 0) they are refused: a resumable session that silently
// dies on a drop, or a resume token that silently opens a new shell, would
// both mislead the control plane. A resumable session must have a sid: a
// resume names it (docs/wire-protocol.md#resume).
func (s *Server) checkResume(c *hmac.Claims) *rejection {
	switch {
	case (c.Resumable || c.Resume != "") && resumeWindow(&s.cfg) < 0:
		return reject(http.StatusNotImplemented, "resume_unsupported",
			"this proxy does not resume sessions (--resume-window 0): mint the token without resumable and resume")
	case c.Resumable && c.Resume == "" && (c.SID == "" || len(c.SID) > 64):
		return reject(http.StatusBadRequest, "resumable_without_sid", "a resumable token needs a sid of at most 64 bytes: a resume names the session by it")
	}
	return nil
}

func sameTarget(a, b *hmac.Claims) bool {
	return a.Namespace == b.Namespace && a.Pod == b.Pod && a.Container == b.Container &&
		slices.Equal(a.Command, b.Command) && a.TTY == b.TTY
}

// admitObserver finds the session an observe token names and joins o to
// it, under the registry lock the limits and revocations are checked
// under. The observer then holds a slot of the server's WaitGroup.
func (s *Server) admitObserver(o *observer) *rejection {
	c := o.ss.claims
	if rej := checkObserve(c); rej != nil {
		return rej
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return rejectDraining()
	}
	var hits []*session
	for ss := range s.sessions {
		if ss.id == c.SID && ss.upgraded.Load() && ss.endReason.Load() == nil {
			hits = append(hits, ss)
		}
	}
	switch {
	case len(hits) == 0:
		return reject(http.StatusNotFound, "observe_unknown_session", "no live session %q on this proxy to observe", shorten(c.SID, 64))
	case len(hits) > 1:
		return reject(http.StatusConflict, "observe_ambiguous_session", "%d live sessions share sid %q; observe needs a unique sid", len(hits), shorten(c.SID, 64))
	case !sameTarget(c, hits[0].claims):
		return reject(http.StatusForbidden, "observe_target_mismatch",
			"the observe token's namespace, pod, container, command and tty must be those of the observed session")
	}
	if rej := s.admitSubjectLocked(c); rej != nil {
		return rej
	}
	o.target = hits[0]
	o.ss.stderr = o.target.stderr
	if !o.target.attachFanout().join(o) {
		return reject(http.StatusTooManyRequests, "too_many_observers", "the session already has %d observers", maxObserversPerSession)
	}
	s.wg.Add(1)
	return nil
}
