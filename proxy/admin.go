package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// AdminTokenVerifier checks an admin token. Admin tokens are not single-use
// (docs/admin.md); *hmac.AdminVerifier is the implementation.
type AdminTokenVerifier interface {
	Verify(token string) (*hmac.AdminClaims, error)
}

// SessionTarget is what a session runs.
type SessionTarget struct {
	Namespace string   `json:"namespace"`
	Pod       string   `json:"pod"`
	Container string   `json:"container,omitempty"`
	Command   []string `json:"command,omitempty"`
}

// SessionInfo is one live session in GET /sessions.
type SessionInfo struct {
	SID     string        `json:"sid"`
	Subject string        `json:"sub"`
	Target  SessionTarget `json:"target"`
	// Protocol is the client's channel subprotocol ("" for none: v1).
	Protocol string `json:"protocol"`
	// Transport is the exec transport toward the API server as configured
	// (auto, websocket, spdy): which one auto picked is known at the end.
	Transport string    `json:"transport"`
	Start     time.Time `json:"start"`
	BytesIn   int64     `json:"bytes_in"`  // client to process (stdin)
	BytesOut  int64     `json:"bytes_out"` // process to client (stdout, stderr)
	// Observers are the read-only connections watching the session.
	Observers []ObserverInfo `json:"observers"`
	// Resume is the state of a resumable session; absent otherwise.
	Resume *ResumeInfo `json:"resume,omitempty"`
}

// SessionList is the body of GET /sessions.
type SessionList struct {
	Items []SessionInfo `json:"items"`
}

// Revoked is the body of a successful DELETE: the sids that were ended.
type Revoked struct {
	Revoked []string `json:"revoked"`
}

// RevokedReason is the Status reason a revoked session's client reads.
const RevokedReason metav1.StatusReason = "Revoked"

// revokedMessage is the terminal notice and the status message.
const revokedMessage = "session revoked by an administrator"

var sessionsResource = schema.GroupResource{Resource: "sessions"}

// AdminHandler serves the admin API: GET /sessions, DELETE /sessions/{sid}
// and DELETE /sessions?sub=X. Serve it on its own listener, never on the
// session port. Every refusal is a metav1.Status and a log line without
// the token.
func (s *Server) AdminHandler(v AdminTokenVerifier) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, err := authenticateAdmin(v, r)
		if err != nil {
			s.adminRefuse(w, r, nil, err)
			return
		}
		var scope string
		var handle func() (any, error)
		switch sid, ok := strings.CutPrefix(r.URL.Path, "/sessions/"); {
		case r.URL.Path == "/sessions" && r.Method == http.MethodGet:
			scope, handle = hmac.ScopeSessionsList, func() (any, error) { return s.listSessions(r.URL.Query().Get("sub")), nil }
		case r.URL.Path == "/sessions" && r.Method == http.MethodDelete:
			scope, handle = hmac.ScopeSessionsRevoke, func() (any, error) {
				sub, ok := r.URL.Query()["sub"]
				if !ok || len(sub) != 1 {
					return nil, apierrors.NewBadRequest("DELETE /sessions needs exactly one sub parameter (DELETE /sessions/{sid} ends one session)")
				}
				return Revoked{Revoked: s.revokeWhere(func(ss *session) bool { return ss.claims.Subject == sub[0] }, claims)}, nil
			}
		case ok && sid != "" && !strings.Contains(sid, "/") && r.Method == http.MethodDelete:
			scope, handle = hmac.ScopeSessionsRevoke, func() (any, error) {
				ended := s.revokeWhere(func(ss *session) bool { return ss.id == sid }, claims)
				if len(ended) == 0 {
					return nil, apierrors.NewNotFound(sessionsResource, sid)
				}
				return Revoked{Revoked: ended}, nil
			}
		case r.URL.Path == "/sessions" || ok && sid != "" && !strings.Contains(sid, "/"):
			s.adminRefuse(w, r, claims, apierrors.NewMethodNotSupported(sessionsResource, r.Method))
			return
		default:
			s.adminRefuse(w, r, claims, apierrors.NewNotFound(schema.GroupResource{}, r.URL.Path))
			return
		}
		if !claims.HasScope(scope) {
			s.adminRefuse(w, r, claims, apierrors.NewForbidden(sessionsResource, "", fmt.Errorf("the admin token's scope lacks %s", scope)))
			return
		}
		body, err := handle()
		if err != nil {
			s.adminRefuse(w, r, claims, err)
			return
		}
		s.log.Info("admin request", "event", "admin", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery,
			"admin_sub", claims.Subject, "admin_jti", claims.ID, "status", http.StatusOK, "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	})
}

// authenticateAdmin reads the Bearer token (the Authorization header only:
// tokens in URLs end up in access logs) and verifies it.
func authenticateAdmin(v AdminTokenVerifier, r *http.Request) (*hmac.AdminClaims, error) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return nil, apierrors.NewUnauthorized("an admin token is required: Authorization: Bearer <token>")
	}
	claims, err := v.Verify(strings.TrimSpace(tok))
	if err != nil {
		reason := hmac.ReasonOf(err)
		if reason == hmac.ReasonUnknown {
			reason = hmac.ReasonMalformed
		}
		return nil, apierrors.NewUnauthorized("admin token rejected: " + string(reason))
	}
	return claims, nil
}

// adminRefuse answers err (an apierrors error) as a Status and logs why.
func (s *Server) adminRefuse(w http.ResponseWriter, r *http.Request, claims *hmac.AdminClaims, err error) {
	st := apierrors.NewInternalError(err).Status()
	if se, ok := err.(apierrors.APIStatus); ok {
		st = se.Status()
	}
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	attrs := []any{"event", "admin_refused", "method", r.Method, "path", r.URL.Path, "status", st.Code,
		"reason", string(st.Reason), "detail", st.Message, "remote", r.RemoteAddr}
	if claims != nil {
		attrs = append(attrs, "admin_sub", claims.Subject, "admin_jti", claims.ID)
	}
	s.log.Warn("admin request refused", attrs...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(int(st.Code))
	_ = json.NewEncoder(w).Encode(st)
}

// listSessions returns the live sessions (of sub, unless empty), oldest
// first.
func (s *Server) listSessions(sub string) SessionList {
	transport := ""
	if t, ok := s.cfg.Executor.(interface{ Transport() exec.Transport }); ok {
		transport = string(t.Transport())
	}
	s.mu.Lock()
	items := make([]SessionInfo, 0, len(s.sessions))
	for ss := range s.sessions {
		c := ss.claims
		if sub != "" && c.Subject != sub {
			continue
		}
		items = append(items, SessionInfo{
			SID: ss.id, Subject: c.Subject,
			Target:   SessionTarget{Namespace: c.Namespace, Pod: c.Pod, Container: c.Container, Command: c.Command},
			Protocol: ss.proto.name, Transport: transport, Start: ss.start.UTC(),
			BytesIn: ss.bytesIn.Load(), BytesOut: ss.bytesOut.Load(), Observers: ss.observers(),
			Resume: ss.resumeInfo(),
		})
	}
	s.mu.Unlock()
	slices.SortFunc(items, func(a, b SessionInfo) int { return a.Start.Compare(b.Start) })
	return SessionList{Items: items}
}

// revokeWhere ends every live session that match selects and returns their
// sids. The execs are cancelled before it returns; what the clients are
// told is written in the background, bounded by endingGrace.
func (s *Server) revokeWhere(match func(*session) bool, by *hmac.AdminClaims) []string {
	s.mu.Lock()
	var hit []*session
	for ss := range s.sessions {
		if match(ss) {
			hit = append(hit, ss)
		}
		// Observers are connections too: one whose own token matches
		// (DELETE /sessions?sub=X, a revoked sub) ends with them.
		hit = append(hit, ss.matchingObservers(match)...)
	}
	s.mu.Unlock()
	ended := []string{}
	for _, ss := range hit {
		if ss.revoke(by) {
			ended = append(ended, ss.id)
		}
	}
	slices.Sort(ended)
	return ended
}

// revoke ends the session for an administrator. Unlike terminate, the exec
// is cancelled first: a revoked user's process must not run on while a
// slow client is told why. It reports false for a session already ending.
func (ss *session) revoke(by *hmac.AdminClaims) bool {
	if !ss.setEndReason("revoked") {
		ss.cancel()
		return false
	}
	ss.bound(endingGrace)
	ss.cancel()
	ss.logger().Warn("session revoked", "event", "revoked", "sub", ss.claims.Subject,
		"admin_sub", by.Subject, "admin_jti", by.ID)
	go func() {
		if !ss.upgraded.Load() || ss.gone.Load() {
			return
		}
		st := &metav1.Status{Status: metav1.StatusFailure, Reason: RevokedReason, Message: revokedMessage,
			Code: http.StatusForbidden}
		ss.sendNotice("\r\n[k8s-ws-proxy] " + revokedMessage + "\r\n")
		ss.sendStatusAndClose(st, websocket.ClosePolicyViolation, revokedMessage)
	}()
	return true
}

// matchingObservers are the observer connections of ss that match selects.
func (ss *session) matchingObservers(match func(*session) bool) []*session {
	f := ss.fan.Load()
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var hit []*session
	for o := range f.observers {
		if o.ss != nil && match(o.ss) {
			hit = append(hit, o.ss)
		}
	}
	return hit
}
