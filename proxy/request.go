package proxy

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

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
}

func (r *rejection) Error() string { return r.message }

func reject(status int, reason, format string, args ...any) *rejection {
	return &rejection{status: status, reason: reason, message: fmt.Sprintf(format, args...)}
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

// looksLikeToken tells a compact JWS in the pod segment (guacd can carry the
// token nowhere else) from a pod name. Pod names are DNS subdomains and may
// contain dots, but never two dots around a base64url JSON header, which
// always begins "eyJ" ('{"').
func looksLikeToken(s string) bool {
	return strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") == 2
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
			return nil, reject(http.StatusUnauthorized, "malformed", "Authorization header is not a Bearer token")
		}
		tokens = append(tokens, strings.TrimSpace(tok))
	}
	tokens = append(tokens, bearerProtos...)
	if vs, ok := q["token"]; ok {
		for _, v := range vs {
			if v == "" {
				return nil, reject(http.StatusUnauthorized, "malformed", "token query parameter is empty")
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

// wantStderr reports whether the client asked for a separate stderr stream.
// Without a tty it defaults to true, so no output is dropped for a client
// (guacd) that never says.
func (req *execRequest) wantStderr(tty bool) (bool, *rejection) {
	if tty {
		return false, nil
	}
	if _, ok := req.query["stderr"]; !ok {
		return true, nil
	}
	return req.opts.Stderr, nil
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
