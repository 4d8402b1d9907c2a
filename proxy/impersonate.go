package proxy

import (
	"context"

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
