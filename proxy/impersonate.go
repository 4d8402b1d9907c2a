package proxy

import (
	"context"
	"net/http"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// Extra keys sent as Impersonate-Extra-*: the API server's audit event of
// the exec then carries the session id and the proxy's node.
const (
	ExtraSessionID = "k8s-ws-proxy.io/session-id"
	ExtraNode      = "k8s-ws-proxy.io/node"
)

// AccessChecker asks the API server whether the identity in ctx may open
// the exec of t (exec.Dialer does it with a SelfSubjectAccessReview).
type AccessChecker interface {
	CanExec(ctx context.Context, t exec.Target) (allowed bool, reason string, err error)
}

// withIdentity puts the token's user into ctx when the proxy impersonates:
// the pod lookup, the access check and the exec then act as that user.
func (s *Server) withIdentity(ctx context.Context, c *hmac.Claims, sid string) context.Context {
	if !s.cfg.Impersonate {
		return ctx
	}
	extra := map[string][]string{ExtraSessionID: {sid}}
	if s.cfg.NodeName != "" {
		extra[ExtraNode] = []string{s.cfg.NodeName}
	}
	return exec.WithIdentity(ctx, exec.Identity{User: c.Subject, Groups: c.Groups, Extra: extra})
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
