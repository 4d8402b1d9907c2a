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

// Core is a core/v1 client.
type Core struct{ rest *rest.RESTClient }

// NewCore returns a core/v1 client for cfg (its QPS, content types and
// impersonation apply).
func NewCore(cfg *rest.Config) (*Core, error) {
	c, err := restClient(cfg, corev1.SchemeGroupVersion, "/api")
	if err != nil {
		return nil, err
	}
	return &Core{rest: c}, nil
}

// RESTClient returns the underlying REST client (for subresource URLs).
func (c *Core) RESTClient() rest.Interface { return c.rest }

// Pods returns the pods of a namespace.
func (c *Core) Pods(namespace string) *Pods { return &Pods{c.rest, namespace} }

// Secrets returns the Secrets of a namespace.
func (c *Core) Secrets(namespace string) SecretInterface { return &secrets{c.rest, namespace} }

// Pods reads pods.
type Pods struct {
	rest      rest.Interface
	namespace string
}

// Get reads one pod.
func (p *Pods) Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Pod, error) {
	out := &corev1.Pod{}
	err := p.rest.Get().UseProtobufAsDefault().Namespace(p.namespace).Resource("pods").Name(name).
		VersionedParams(&opts, ParameterCodec).Do(ctx).Into(out)
	return out, err
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

type secrets struct {
	rest      rest.Interface
	namespace string
}

func (s *secrets) Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Secret, error) {
	out := &corev1.Secret{}
	err := s.rest.Get().UseProtobufAsDefault().Namespace(s.namespace).Resource("secrets").Name(name).
		VersionedParams(&opts, ParameterCodec).Do(ctx).Into(out)
	return out, err
}

func (s *secrets) Create(ctx context.Context, in *corev1.Secret, opts metav1.CreateOptions) (*corev1.Secret, error) {
	out := &corev1.Secret{}
	err := s.rest.Post().UseProtobufAsDefault().Namespace(s.namespace).Resource("secrets").
		VersionedParams(&opts, ParameterCodec).Body(in).Do(ctx).Into(out)
	return out, err
}

func (s *secrets) Update(ctx context.Context, in *corev1.Secret, opts metav1.UpdateOptions) (*corev1.Secret, error) {
	out := &corev1.Secret{}
	err := s.rest.Put().UseProtobufAsDefault().Namespace(s.namespace).Resource("secrets").Name(in.Name).
		VersionedParams(&opts, ParameterCodec).Body(in).Do(ctx).Into(out)
	return out, err
}

// Authorization is an authorization.k8s.io/v1 client.
type Authorization struct{ rest *rest.RESTClient }

// NewAuthorization returns an authorization/v1 client for cfg.
func NewAuthorization(cfg *rest.Config) (*Authorization, error) {
	c, err := restClient(cfg, authorizationv1.SchemeGroupVersion, "/apis")
	if err != nil {
		return nil, err
	}
	return &Authorization{rest: c}, nil
}

// CreateSelfSubjectAccessReview asks whether the caller may do what r
// describes.
func (a *Authorization) CreateSelfSubjectAccessReview(ctx context.Context, r *authorizationv1.SelfSubjectAccessReview, opts metav1.CreateOptions) (*authorizationv1.SelfSubjectAccessReview, error) {
	out := &authorizationv1.SelfSubjectAccessReview{}
	err := a.rest.Post().UseProtobufAsDefault().Resource("selfsubjectaccessreviews").
		VersionedParams(&opts, ParameterCodec).Body(r).Do(ctx).Into(out)
	return out, err
}
