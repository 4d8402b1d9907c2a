package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

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

	protocols, bearerProtos, err := splitOfferedProtocols(r.Header.Values("Sec-WebSocket-Protocol"))
	if err != nil {
		return nil, reject(http.StatusBadRequest, "bad_subprotocol", "%v", err)
	}
	req.protocols = protocols

	var tokens []string
	if h := r.Header.Get("Authorization"); h != "" {
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
		name  string
		claim bool
	}{{"tty", c.TTY}, {"stdin", c.Stdin}} {
		vs, ok := req.query[f.name]
		if !ok {
			continue
		}
		b, err := parseBoolParam(vs)
		if err != nil {
			return reject(http.StatusBadRequest, "bad_query", "query parameter %s: %v", f.name, err)
		}
		if b != f.claim {
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
	vs, ok := req.query["stderr"]
	if !ok {
		return true, nil
	}
	b, err := parseBoolParam(vs)
	if err != nil {
		return false, reject(http.StatusBadRequest, "bad_query", "query parameter stderr: %v", err)
	}
	return b, nil
}

var errBadBool = errors.New("must be true, false, 1 or 0, given once")

func parseBoolParam(vs []string) (bool, error) {
	if len(vs) != 1 {
		return false, errBadBool
	}
	b, err := strconv.ParseBool(vs[0])
	if err != nil {
		return false, errBadBool
	}
	return b, nil
}
