package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// TokenPeeker is implemented by a TokenVerifier that can check a token
// without consuming it (*hmac.Verifier does). Without it the proxy cannot
// answer kubectl's GET of the pod, nor explain a refusal on client-go's SPDY
// retry, without using up the single-use token; it then refuses both.
type TokenPeeker interface {
	Peek(token string) (c *hmac.Claims, used bool, err error)
}

// defaultContainerAnnotation is the annotation kubectl reads to pick a
// container when -c is not given (KEP-2227).
const defaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

// registerKubectl adds the answers kubectl needs around an exec, on the same
// listener: kubectl asks discovery (/api, /api/v1, /apis), then GETs the pod,
// and only then upgrades; when the WebSocket upgrade is refused, client-go
// retries over SPDY with a POST. Every other path is a 404 Status, so that
// kubectl prints the API server's usual message, not an HTML or text page.
func (s *Server) registerKubectl(mux *http.ServeMux) {
	mux.HandleFunc("GET /api", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, apiVersions) })
	mux.HandleFunc("GET /api/v1", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, coreV1Resources) })
	mux.HandleFunc("GET /apis", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, apiGroups) })
	mux.HandleFunc("GET /api/v1/namespaces/{namespace}/pods/{pod}", s.serveGetPod)
	mux.HandleFunc("POST /api/v1/namespaces/{namespace}/pods/{pod}/exec", func(w http.ResponseWriter, r *http.Request) { s.serveSPDYRefusal(w, r, false) })
	mux.HandleFunc("POST /api/v1/namespaces/{namespace}/pods/{pod}/attach", func(w http.ResponseWriter, r *http.Request) { s.serveSPDYRefusal(w, r, true) })
	mux.HandleFunc("/", s.serveNotFound)
}

// Discovery lists only what the proxy serves: pods (get, for the token's own
// pod), pods/exec and pods/attach. Legacy (unaggregated) discovery documents:
// client-go falls back to them when the answer is plain application/json.
var (
	apiVersions = &metav1.APIVersions{
		TypeMeta:                   metav1.TypeMeta{Kind: "APIVersions"},
		Versions:                   []string{"v1"},
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{},
	}
	apiGroups = &metav1.APIGroupList{
		TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"},
		Groups:   []metav1.APIGroup{},
	}
	coreV1Resources = &metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: "v1",
		APIResources: []metav1.APIResource{
			{Name: "pods", SingularName: "pod", Namespaced: true, Kind: "Pod", Verbs: metav1.Verbs{"get"}, ShortNames: []string{"po"}},
			{Name: "pods/attach", Namespaced: true, Kind: "PodAttachOptions", Verbs: metav1.Verbs{"create", "get"}},
			{Name: "pods/exec", Namespaced: true, Kind: "PodExecOptions", Verbs: metav1.Verbs{"create", "get"}},
		},
	}
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// serveNotFound answers every path the proxy does not serve as the API server
// would. The path is not logged whole: guacd carries the token in it.
func (s *Server) serveNotFound(w http.ResponseWriter, r *http.Request) {
	s.log.Info("request refused", "event", "not_found", "status", http.StatusNotFound, "method", r.Method,
		"path", redactPath(r.URL.Path), "remote", r.RemoteAddr)
	writeRejection(w, reject(http.StatusNotFound, "not_found", "the server could not find the requested resource"))
}

// redactPath replaces every path segment that looks like a token.
func redactPath(p string) string {
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		if looksLikeToken(seg) || len(seg) > 253 {
			segs[i] = "REDACTED"
		}
	}
	return strings.Join(segs, "/")
}

// serveGetPod answers kubectl's GET of the pod it is about to exec into, for
// the token's own target only and without consuming the token. The answer is
// a pod reduced to what kubectl reads (name, namespace, uid, container names,
// phase, container states): a pod's spec can hold secrets (env, commands,
// volumes) and the token grants a session, not a read of the pod.
func (s *Server) serveGetPod(w http.ResponseWriter, r *http.Request) {
	ctx, span := s.tel.tracer.Start(r.Context(), "k8s_ws_proxy.get_pod", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	sid := ""
	refuse := func(rej *rejection) {
		s.refuseRequest(ctx, span, w, r, sid, "get_pod", rej)
	}
	// The lookup waits on the API server like a session's admission.
	w, leave, rej := s.enterAdmission(w, r)
	defer leave()
	if rej != nil {
		refuse(rej)
		return
	}
	peeker, ok := s.cfg.Verifier.(TokenPeeker)
	if !ok {
		refuse(reject(http.StatusNotFound, "not_found", "the server could not find the requested resource"))
		return
	}
	h := r.Header.Get("Authorization")
	scheme, tok, _ := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		refuse(reject(http.StatusUnauthorized, "missing_token", "no session token: send it as a Bearer token"))
		return
	}
	claims, used, err := peeker.Peek(tok)
	if err != nil {
		refuse(tokenRejection(err))
		return
	}
	sid = sessionIDOf(claims)
	if used {
		refuse(tokenRejection(&hmac.Error{Reason: hmac.ReasonReplayed}))
		return
	}
	ns, name := r.PathValue("namespace"), r.PathValue("pod")
	if ns != claims.Namespace || name != claims.Pod {
		refuse(reject(http.StatusForbidden, "scope_mismatch", "the token does not grant access to pod %s/%s", ns, name))
		return
	}
	if claims.Node != "" && claims.Node != s.cfg.NodeName {
		refuse(reject(http.StatusForbidden, "wrong_node", "token is for another node"))
		return
	}
	if errs := validation.IsDNS1123Subdomain(claims.Pod); len(errs) > 0 {
		refuse(reject(http.StatusForbidden, "bad_claims", "token pod is not a valid pod name"))
		return
	}
	pod, rej := s.lookupTargetPod(ctx, claims)
	if rej != nil {
		refuse(rej)
		return
	}
	s.log.Info("pod answered", "sid", sid, "event", "get_pod", "namespace", claims.Namespace, "pod", claims.Pod, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, reducePod(pod, claims))
}

// lookupTargetPod returns the token's pod with the checks of checkPod, or,
// without a PodGetter, a pod made from the claims alone.
func (s *Server) lookupTargetPod(ctx context.Context, c *hmac.Claims) (*corev1.Pod, *rejection) {
	if s.cfg.Pods == nil {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.Pod},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		}
		if c.Container != "" {
			pod.Spec.Containers = []corev1.Container{{Name: c.Container}}
		}
		return pod, nil
	}
	// Not as the user: the GET is answered from the proxy's own view.
	return s.lookupPod(ctx, c, false)
}

// reducePod keeps what kubectl exec and attach read and nothing else. From
// the token, not the pod, come the default-container annotation (kubectl
// then needs no -c) and the token's container's tty and stdin flags (kubectl
// attach takes its tty mode from them, which must agree with the token).
func reducePod(pod *corev1.Pod, c *hmac.Claims) *corev1.Pod {
	out := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      pod.Name,
			Namespace: pod.Namespace,
			UID:       pod.UID,
		},
		Status: corev1.PodStatus{Phase: pod.Status.Phase},
	}
	if c.Container != "" {
		out.Annotations = map[string]string{defaultContainerAnnotation: c.Container}
	}
	for _, ct := range pod.Spec.Containers {
		rc := corev1.Container{Name: ct.Name}
		if ct.Name == c.Container {
			rc.TTY, rc.Stdin = c.TTY, c.Stdin
		}
		out.Spec.Containers = append(out.Spec.Containers, rc)
	}
	for _, st := range pod.Status.ContainerStatuses {
		out.Status.ContainerStatuses = append(out.Status.ContainerStatuses, corev1.ContainerStatus{
			Name:         st.Name,
			Ready:        st.Ready,
			Started:      st.Started,
			RestartCount: st.RestartCount,
			State:        reduceState(st.State),
		})
	}
	return out
}

// reduceState drops the free-text messages (a termination message is
// whatever the container wrote) and keeps the kind, reason and exit code.
func reduceState(st corev1.ContainerState) corev1.ContainerState {
	var out corev1.ContainerState
	if w := st.Waiting; w != nil {
		out.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason}
	}
	if r := st.Running; r != nil {
		out.Running = &corev1.ContainerStateRunning{StartedAt: r.StartedAt}
	}
	if t := st.Terminated; t != nil {
		out.Terminated = &corev1.ContainerStateTerminated{ExitCode: t.ExitCode, Signal: t.Signal, Reason: t.Reason,
			StartedAt: t.StartedAt, FinishedAt: t.FinishedAt}
	}
	return out
}

// serveSPDYRefusal answers client-go's SPDY retry (a POST to the exec or
// attach URL, sent after the WebSocket upgrade was refused). The proxy
// serves no SPDY; the answer is a Status with the reason the WebSocket
// upgrade was refused for, worked out again without consuming the token,
// because client-go shows the user this second answer, not the first.
func (s *Server) serveSPDYRefusal(w http.ResponseWriter, r *http.Request, attach bool) {
	ctx, span := s.tel.tracer.Start(r.Context(), "k8s_ws_proxy.spdy_refusal", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	w, leave, rej := s.enterAdmission(w, r)
	defer leave()
	if rej != nil {
		s.refuseRequest(ctx, span, w, r, "", "spdy", rej)
		return
	}
	sid, rej := s.explainRefusal(ctx, r, attach)
	s.refuseRequest(ctx, span, w, r, sid, "spdy", rej)
}

// explainRefusal runs the WebSocket path's checks in its order, peeking at the
// token instead of verifying it. A consumed token is reported as replayed only
// if nothing that comes after the token check in the WebSocket path fails: a
// token that passed verification there (and was consumed) was refused for
// that later reason.
func (s *Server) explainRefusal(ctx context.Context, r *http.Request, attach bool) (string, *rejection) {
	spdyOnly := reject(http.StatusBadRequest, "spdy_not_supported",
		"this proxy serves exec and attach over WebSocket only (%s); SPDY is not supported", strings.Join(protocolPreference, ", "))
	switch {
	case s.draining.Load():
		return "", rejectDraining()
	case !s.originAllowed(r):
		return "", originRejection(r)
	}
	req, rej := parseExecRequest(r, attach)
	if rej != nil {
		return "", rej
	}
	peeker, ok := s.cfg.Verifier.(TokenPeeker)
	if !ok {
		return "", spdyOnly
	}
	claims, used, err := peeker.Peek(req.token)
	if err != nil {
		return "", tokenRejection(err)
	}
	sid := sessionIDOf(claims)
	if rej := req.checkScope(claims, s.cfg.NodeName); rej != nil {
		return sid, rej
	}
	if rej := s.checkPod(ctx, claims); rej != nil {
		return sid, rej
	}
	if s.ActiveSessions() >= s.cfg.MaxSessions {
		return sid, rejectTooMany(s.cfg.MaxSessions)
	}
	if used {
		return sid, tokenRejection(&hmac.Error{Reason: hmac.ReasonReplayed})
	}
	return sid, spdyOnly
}

// refuseRequest logs, counts and answers a refused request that is not a
// WebSocket upgrade (kubectl's GET of the pod, client-go's SPDY retry), the
// way serveSession refuses an upgrade.
func (s *Server) refuseRequest(ctx context.Context, span trace.Span, w http.ResponseWriter, r *http.Request, sid, kind string, rej *rejection) {
	if sid == "" {
		sid = newSessionID()
	}
	attrs := []any{"sid", sid, "event", "rejected", "request", kind, "status", rej.status,
		"reason", rej.reason, "detail", rej.message, "remote", r.RemoteAddr}
	if rej.detail != "" {
		attrs = append(attrs, "error", rej.detail)
	}
	s.log.Warn("session rejected", attrs...)
	s.tel.rejected(ctx, rej.reason, rej.status, rej.auth)
	span.SetAttributes(attribute.String("k8s_ws_proxy.sid", sid), attribute.String("k8s_ws_proxy.rejection", rej.reason),
		attribute.Int("http.response.status_code", rej.status))
	span.SetStatus(codes.Error, rej.reason)
	writeRejection(w, rej)
}
