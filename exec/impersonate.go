package exec

import (
	"context"
	"fmt"
	"maps"
	"slices"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeclient"
)

// Identity is the user a session acts as at the API server. With one in the
// context, the pod lookup, the access check and the exec carry
// Impersonate-User, Impersonate-Group and Impersonate-Extra-* headers
// (rest.Config.Impersonate), so the API server authorizes that user and
// its audit log names them.
type Identity struct {
	User   string
	Groups []string
	Extra  map[string][]string
}

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity in ctx, if any.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok && id.User != ""
}

// configFor is the dialer's config, impersonating the identity in ctx.
func (d *Dialer) configFor(ctx context.Context) *rest.Config {
	id, ok := IdentityFrom(ctx)
	if !ok {
		return d.cfg
	}
	cfg := rest.CopyConfig(d.cfg)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: id.User, Groups: slices.Clone(id.Groups), Extra: maps.Clone(id.Extra),
	}
	return cfg
}

// impersonatedCore is a client sending the identity in ctx; the
// HTTP transport underneath is client-go's shared, cached one.
func (d *Dialer) impersonatedCore(ctx context.Context) (*kubeclient.Client, bool, error) {
	if _, ok := IdentityFrom(ctx); !ok {
		return nil, false, nil
	}
	c, err := kubeclient.New(protobufFirst(d.configFor(ctx)))
	return c, true, err
}

// CanExec asks the API server, as the identity in ctx, whether it may
// create t's exec (or attach) subresource: a SelfSubjectAccessReview sent
// impersonated, so the answer is the API server's own RBAC decision for
// that user. Without an identity it reports true. reason is the
// authorizer's explanation when denied.
func (d *Dialer) CanExec(ctx context.Context, t Target) (allowed bool, reason string, err error) {
	if _, ok := IdentityFrom(ctx); !ok {
		return true, "", nil
	}
	c, err := kubeclient.New(d.configFor(ctx))
	if err != nil {
		return false, "", err
	}
	sub := "exec"
	if len(t.Command) == 0 {
		sub = "attach"
	}
	r, err := c.SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: t.Namespace, Verb: "create", Resource: "pods", Subresource: sub, Name: t.Pod,
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("access review: %w", err)
	}
	reason = r.Status.Reason
	if r.Status.EvaluationError != "" {
		reason += " (" + r.Status.EvaluationError + ")"
	}
	return r.Status.Allowed && !r.Status.Denied, reason, nil
}
