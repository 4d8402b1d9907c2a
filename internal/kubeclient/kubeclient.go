// Package kubeclient holds the few API calls the k8s-ws-proxy binary makes
// (pods get, the exec URL, Secrets, SelfSubjectAccessReviews) on client-go's
// REST client. The typed clients under k8s.io/client-go/kubernetes register
// every API group in their scheme, about 10 MB of the stripped binary; this
// scheme holds only core/v1 and authorization/v1.
package kubeclient

import (
	"context"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
)

var (
	// Scheme knows core/v1, authorization/v1 and the meta/v1 options.
	Scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(Scheme)
	// ParameterCodec encodes options (PodExecOptions, GetOptions) as query
	// parameters, as client-go's scheme.ParameterCodec does.
	ParameterCodec = runtime.NewParameterCodec(Scheme)
)

func init() {
	utilruntime.Must(corev1.AddToScheme(Scheme))
	utilruntime.Must(authorizationv1.AddToScheme(Scheme))
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
}

// restClient is what corev1client.NewForConfig and its siblings build.
func restClient(cfg *rest.Config, gv schema.GroupVersion, apiPath string) (*rest.RESTClient, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &gv
	c.APIPath = apiPath
	// As the generated clients do: protobuf preferred per request, CBOR
	// only behind client-go's feature gate.
	c.NegotiatedSerializer = rest.CodecFactoryForGeneratedClient(Scheme, codecs).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	return rest.RESTClientFor(c)
}

// Client is a core/v1 and authorization/v1 client for one config (its QPS,
// content types and impersonation apply).
type Client struct{ core, authorization *rest.RESTClient }

// New returns a Client for cfg.
func New(cfg *rest.Config) (*Client, error) {
	core, err := restClient(cfg, corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return nil, err
	}
	authorization, err := restClient(cfg, authorizationv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, err
	}
	return &Client{core: core, authorization: authorization}, nil
}

// RESTClient returns the core/v1 REST client (for subresource URLs).
func (c *Client) RESTClient() rest.Interface { return c.core }

// Pods returns the pods of a namespace.
func (c *Client) Pods(namespace string) *Resource[*corev1.Pod] {
	return &Resource[*corev1.Pod]{c.core, namespace, "pods", func() *corev1.Pod { return &corev1.Pod{} }}
}

// Secrets returns the Secrets of a namespace.
func (c *Client) Secrets(namespace string) SecretInterface {
	return &Resource[*corev1.Secret]{c.core, namespace, "secrets", func() *corev1.Secret { return &corev1.Secret{} }}
}

// SecretInterface is the part of client-go's typed SecretInterface the
// bootstrap needs; client-go's typed client satisfies it too.
type SecretInterface interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Secret, error)
	Create(ctx context.Context, s *corev1.Secret, opts metav1.CreateOptions) (*corev1.Secret, error)
	Update(ctx context.Context, s *corev1.Secret, opts metav1.UpdateOptions) (*corev1.Secret, error)
}

// SecretsGetter opens the Secrets of a namespace.
type SecretsGetter interface {
	Secrets(namespace string) SecretInterface
}

// Resource is one resource of a group, in a namespace unless cluster-scoped
// (namespace ""): the generated clients' gentype.Client, cut to three verbs.
type Resource[T interface {
	runtime.Object
	GetName() string
}] struct {
	rest      rest.Interface
	namespace string
	resource  string
	newObject func() T
}

func (r *Resource[T]) request(verb string) *rest.Request {
	return r.rest.Verb(verb).UseProtobufAsDefault().NamespaceIfScoped(r.namespace, r.namespace != "").Resource(r.resource)
}

func (r *Resource[T]) into(ctx context.Context, req *rest.Request) (T, error) {
	out := r.newObject()
	err := req.Do(ctx).Into(out)
	return out, err
}

// Get reads one object.
func (r *Resource[T]) Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error) {
	return r.into(ctx, r.request("GET").Name(name).VersionedParams(&opts, ParameterCodec))
}

// Create creates in.
func (r *Resource[T]) Create(ctx context.Context, in T, opts metav1.CreateOptions) (T, error) {
	return r.into(ctx, r.request("POST").VersionedParams(&opts, ParameterCodec).Body(in))
}

// Update replaces in (guarded by its resourceVersion).
func (r *Resource[T]) Update(ctx context.Context, in T, opts metav1.UpdateOptions) (T, error) {
	return r.into(ctx, r.request("PUT").Name(in.GetName()).VersionedParams(&opts, ParameterCodec).Body(in))
}

// SelfSubjectAccessReviews asks whether the caller may do what a review
// describes (Create only).
func (c *Client) SelfSubjectAccessReviews() *Resource[*authorizationv1.SelfSubjectAccessReview] {
	return &Resource[*authorizationv1.SelfSubjectAccessReview]{c.authorization, "", "selfsubjectaccessreviews",
		func() *authorizationv1.SelfSubjectAccessReview { return &authorizationv1.SelfSubjectAccessReview{} }}
}
