package proxy

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// FuzzDecodeFrame: no input may panic the decoder, and whatever decodes
// re-encodes to a frame that decodes the same.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(false, []byte{0, 'l', 's', '\r'})
	f.Add(false, []byte{4, '{', '}'})
	f.Add(false, []byte{255, 0})
	f.Add(true, []byte("0bHMNCg=="))
	f.Add(true, []byte("9"))
	f.Add(false, []byte{})
	f.Fuzz(func(t *testing.T, b64 bool, msg []byte) {
		name := ProtocolV5
		if b64 {
			name = ProtocolV4Base64
		}
		p := protocolFor(name)
		fr, err := decodeFrame(p, msg)
		if err != nil {
			return
		}
		again, err := decodeFrame(p, p.encodeFrame(nil, fr.channel, fr.payload))
		if err != nil || again.channel != fr.channel || !bytes.Equal(again.payload, fr.payload) {
			t.Fatalf("re-encoding changed the frame: %v", err)
		}
	})
}

// FuzzParseResize: never panics, and an accepted size is in range.
func FuzzParseResize(f *testing.F) {
	for _, s := range []string{`{"Width":80,"Height":24}`, `{"Width":-1,"Height":2}`, `{"Width":1e3,"Height":2}`, `{`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseResize(b)
		if err == nil && (s.Width == 0 || s.Height == 0) {
			t.Fatalf("accepted a zero size %v from %q", s, b)
		}
	})
}

// FuzzSplitOfferedProtocols: never panics; a bearer entry never leaks into
// the protocols offered for negotiation.
func FuzzSplitOfferedProtocols(f *testing.F) {
	f.Add("v4.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9r")
	f.Add(",,, ,")
	f.Fuzz(func(t *testing.T, header string) {
		protos, _, err := splitOfferedProtocols([]string{header})
		if err != nil {
			return
		}
		for _, p := range protos {
			if len(p) >= len(bearerProtocolPrefix) && p[:len(bearerProtocolPrefix)] == bearerProtocolPrefix {
				t.Fatalf("bearer entry %q left among protocols", p)
			}
		}
	})
}

// FuzzParseExecRequest: the request parser gathers the token from the pod
// segment, Authorization headers, the bearer subprotocol and the query.
// No input panics it; an accepted request's token is what every source
// present carries; no bearer entry is left among the protocols; a refusal
// is a 400 or 401 of a known reason whose message repeats no token source.
func FuzzParseExecRequest(f *testing.F) {
	tok := "eyJhbGciOiJIUzI1NiJ9.eyJwb2QiOiJwb2QifQ.c2ln"
	b64 := base64.RawURLEncoding.EncodeToString([]byte(tok))
	f.Add("pod", "command=sh&stdin=true", "Bearer "+tok, "v5.channel.k8s.io", false)
	f.Add(tok, "command=sh&tty=1", "", "v4.channel.k8s.io", false)
	f.Add("pod", "token="+tok, "", "", true)
	f.Add("pod", "", "", "v4.base64.channel.k8s.io, "+bearerProtocolPrefix+b64, false)
	f.Add(tok, "token="+tok+"&container=c", "Bearer "+tok, bearerProtocolPrefix+b64+",v5.channel.k8s.io", false)
	f.Add("pod", "token=", "bearer  x ", "", false)
	f.Add("pod", "command=%zz", "Basic x", bearerProtocolPrefix+"!!", true)
	f.Add("pod", "", "Bearer "+tok+"\nBearer "+tok+"x", "", false)
	f.Fuzz(func(t *testing.T, pod, rawQuery, authorization, protocols string, attach bool) {
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/x", RawQuery: rawQuery}, Header: http.Header{}}
		r.SetPathValue("namespace", "ns")
		r.SetPathValue("pod", pod)
		// One Authorization header per line: a second header is a second place.
		var auths []string
		if authorization != "" {
			auths = strings.Split(authorization, "\n")
		}
		for _, a := range auths {
			r.Header.Add("Authorization", a)
		}
		if protocols != "" {
			r.Header.Set("Sec-WebSocket-Protocol", protocols)
		}
		req, rej := parseExecRequest(r, attach)
		if rej != nil {
			// Each message is a constant: none can repeat a token.
			if (rej.status != http.StatusBadRequest && rej.status != http.StatusUnauthorized) || parseRefusals[rej.message] != rej.reason {
				t.Fatalf("refusal %d %q %q", rej.status, rej.reason, rej.message)
			}
			return
		}
		if req.token == "" {
			t.Fatal("accepted without a token")
		}
		for _, a := range auths {
			if scheme, v, _ := strings.Cut(a, " "); !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(v) != req.token {
				t.Fatalf("token %q accepted with the Authorization header %q", req.token, a)
			}
		}
		if q, err := url.ParseQuery(rawQuery); err == nil {
			for _, v := range q["token"] {
				if v != req.token {
					t.Fatalf("token %q, the query carries %q", req.token, v)
				}
			}
		}
		if looksLikeToken(pod) && pod != req.token {
			t.Fatalf("token %q, the pod segment carries %q", req.token, pod)
		}
		if req.attach != attach || req.podSegment != pod || req.namespace != "ns" {
			t.Fatalf("request %+v", req)
		}
		for _, p := range req.protocols {
			if hasBearerPrefix(p) && strings.HasPrefix(p, bearerProtocolPrefix) {
				t.Fatalf("bearer entry %q left among the protocols", p)
			}
		}
	})
}

// parseRefusals are the messages parseExecRequest refuses with, and their
// reasons.
var parseRefusals = map[string]string{
	"query string is malformed":                                "bad_query",
	"bearer token subprotocol is not valid base64url":          "bad_subprotocol",
	"Authorization header is not a Bearer token":               string(hmac.ReasonMalformed),
	"token query parameter is empty":                           string(hmac.ReasonMalformed),
	"the request carries different tokens in different places": "conflicting_tokens",
	"no session token: send it as a Bearer token, a base64url.bearer.authorization.k8s.io subprotocol, ?token=, or the pod path segment": "missing_token",
}
