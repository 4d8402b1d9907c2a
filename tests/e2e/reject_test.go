package e2e

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// upgradeRequest is one raw WebSocket upgrade attempt.
type upgradeRequest struct {
	path      string
	header    http.Header
	protocols []string
}

// tryUpgrade sends the request and reports the HTTP status; a 101 also
// returns the open connection.
func (e *env) tryUpgrade(t *testing.T, r upgradeRequest) (int, string, *websocket.Conn) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: r.protocols, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial("ws://"+e.Addr+r.path, r.header)
	if err == nil {
		return resp.StatusCode, "", ws
	}
	if resp == nil {
		t.Fatalf("upgrade failed without a response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// TestRejectionsBeforeUpgrade: every token or scope problem is answered
// with its HTTP status and no upgrade, the log says why without the token,
// and a live session is not disturbed by any of it.
func TestRejectionsBeforeUpgrade(t *testing.T) {
	e := startEnv(t, envOptions{})
	base := "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod
	v4 := []string{"v4.channel.k8s.io"}

	// A live session that must survive everything below.
	live := e.claims("cat")
	live.Stdin = true
	liveStatus, _, liveWS := e.tryUpgrade(t, upgradeRequest{path: base + "/exec?command=cat&container=" + testContainer,
		header: bearer(e.mint(live)), protocols: v4})
	if liveStatus != http.StatusSwitchingProtocols {
		t.Fatalf("live session: status %d", liveStatus)
	}
	defer liveWS.Close()
	echo := func(s string) {
		t.Helper()
		if err := liveWS.WriteMessage(websocket.BinaryMessage, append([]byte{0}, s...)); err != nil {
			t.Fatal(err)
		}
		var got string
		for !strings.Contains(got, s) {
			liveWS.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, msg, err := liveWS.ReadMessage()
			if err != nil {
				t.Fatalf("live session broke: %v", err)
			}
			if msg[0] == 1 {
				got += string(msg[1:])
			}
		}
	}
	echo("before\n")

	type tc struct {
		name   string
		req    func() upgradeRequest
		status int
		reason string
	}
	mintWith := func(mod func(*hmac.Claims)) string {
		c := e.claims("sh")
		mod(&c)
		return e.mint(c)
	}
	otherKey, _ := hmac.NewSigner([]byte(strings.Repeat("z", 32)))
	replayed := e.mint(e.claims("sh"))
	cases := []tc{
		{"no token", func() upgradeRequest { return upgradeRequest{path: base + "/exec?command=sh", protocols: v4} }, 401, "missing_token"},
		{"garbage token", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer("not-a-token"), protocols: v4}
		}, 401, "malformed"},
		{"expired", func() upgradeRequest {
			tok := mintWith(func(c *hmac.Claims) {
				c.IssuedAt = jwt.NewNumericDate(time.Now().Add(-3 * time.Minute))
				c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Minute))
			})
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer(tok), protocols: v4}
		}, 401, "expired"},
		{"unknown key", func() upgradeRequest {
			tok, _ := otherKey.Sign(e.claims("sh"))
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer(tok), protocols: v4}
		}, 401, "unknown_key"},
		{"wrong audience", func() upgradeRequest {
			tok := mintWith(func(c *hmac.Claims) { c.Audience = jwt.ClaimStrings{"someone-else"} })
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer(tok), protocols: v4}
		}, 401, "wrong_audience"},
		{"replayed", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer(replayed), protocols: v4}
		}, 401, "replayed"},
		{"wrong namespace in path", func() upgradeRequest {
			return upgradeRequest{path: "/api/v1/namespaces/other/pods/" + testPod + "/exec?command=sh", header: bearer(e.mint(e.claims("sh"))), protocols: v4}
		}, 403, "scope_mismatch"},
		{"wrong pod in path", func() upgradeRequest {
			return upgradeRequest{path: "/api/v1/namespaces/" + testNamespace + "/pods/other/exec?command=sh", header: bearer(e.mint(e.claims("sh"))), protocols: v4}
		}, 403, "scope_mismatch"},
		{"wrong command in query", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=rm", header: bearer(e.mint(e.claims("sh"))), protocols: v4}
		}, 403, "scope_mismatch"},
		{"wrong container in query", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh&container=sidecar", header: bearer(e.mint(e.claims("sh"))), protocols: v4}
		}, 403, "scope_mismatch"},
		{"tty the token does not grant", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh&tty=true", header: bearer(e.mint(e.claims("sh"))), protocols: v4}
		}, 403, "scope_mismatch"},
		{"attach with an exec token", func() upgradeRequest {
			return upgradeRequest{path: base + "/attach", header: bearer(e.mint(e.claims("sh"))), protocols: v4}
		}, 403, "scope_mismatch"},
		{"wrong node", func() upgradeRequest {
			tok := mintWith(func(c *hmac.Claims) { c.Node = "node-2" })
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer(tok), protocols: v4}
		}, 403, "wrong_node"},
		{"missing pod", func() upgradeRequest {
			tok := mintWith(func(c *hmac.Claims) { c.Pod = "no-such-pod" })
			return upgradeRequest{path: "/api/v1/namespaces/" + testNamespace + "/pods/no-such-pod/exec?command=sh", header: bearer(tok), protocols: v4}
		}, 404, "pod_not_found"},
		{"missing container", func() upgradeRequest {
			tok := mintWith(func(c *hmac.Claims) { c.Container = "nope" })
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer(tok), protocols: v4}
		}, 404, "container_not_found"},
		{"two different tokens", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh&token=" + e.mint(e.claims("sh")), header: bearer(e.mint(e.claims("sh"))), protocols: v4}
		}, 400, "conflicting_tokens"},
		{"alg none", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer(e.algNone(e.claims("sh"))), protocols: v4}
		}, 401, "bad_algorithm"},
		{"tampered payload", func() upgradeRequest {
			parts := strings.Split(e.mint(e.claims("sh")), ".")
			other := strings.Split(e.mint(e.claims("rm")), ".")
			return upgradeRequest{path: base + "/exec?command=rm", header: bearer(parts[0] + "." + other[1] + "." + parts[2]), protocols: v4}
		}, 401, "bad_signature"},
		{"not yet valid", func() upgradeRequest {
			tok := mintWith(func(c *hmac.Claims) {
				c.NotBefore = jwt.NewNumericDate(time.Now().Add(2 * time.Minute))
				c.IssuedAt = jwt.NewNumericDate(time.Now())
				c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(3 * time.Minute))
			})
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer(tok), protocols: v4}
		}, 401, "not_yet_valid"},
		{"lifetime above max ttl", func() upgradeRequest {
			tok := mintWith(func(c *hmac.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(time.Hour)) })
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer(tok), protocols: v4}
		}, 401, "ttl_too_long"},
		{"path traversal in pod segment", func() upgradeRequest {
			return upgradeRequest{path: "/api/v1/namespaces/" + testNamespace + "/pods/%2e%2e/exec?command=sh", header: bearer(e.mint(e.claims("sh"))), protocols: v4}
		}, 403, "scope_mismatch"},
		{"percent-encoded slash in pod segment", func() upgradeRequest {
			return upgradeRequest{path: "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "%2Fexec/exec?command=sh", header: bearer(e.mint(e.claims("sh"))), protocols: v4}
		}, 403, "scope_mismatch"},
		{"percent-encoded namespace", func() upgradeRequest {
			return upgradeRequest{path: "/api/v1/namespaces/team%2Da%2F../pods/" + testPod + "/exec?command=sh", header: bearer(e.mint(e.claims("sh"))), protocols: v4}
		}, 403, "scope_mismatch"},
		{"foreign origin", func() upgradeRequest {
			h := bearer(e.mint(e.claims("sh")))
			h.Set("Origin", "https://evil.example")
			return upgradeRequest{path: base + "/exec?command=sh", header: h, protocols: v4}
		}, 403, "origin_not_allowed"},
		{"bearer subprotocol not base64url", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh", protocols: append(v4, "base64url.bearer.authorization.k8s.io.%%%")}
		}, 400, "bad_subprotocol"},
		{"stdin the token does not grant", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh&stdin=true", header: bearer(e.mint(e.claims("sh"))), protocols: v4}
		}, 403, "scope_mismatch"},
		{"unknown subprotocol", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer(e.mint(e.claims("sh"))), protocols: []string{"v3.channel.k8s.io"}}
		}, 400, "unsupported_subprotocol"},
		{"two different Authorization headers", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh",
				header: http.Header{"Authorization": {"Bearer " + e.mint(e.claims("sh")), "Bearer " + e.mint(e.claims("sh"))}}, protocols: v4}
		}, 400, "conflicting_tokens"},
		{"mis-cased bearer subprotocol beside a valid header", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh", header: bearer(e.mint(e.claims("sh"))),
				protocols: []string{"v3.channel.k8s.io", "Base64url.bearer.authorization.k8s.io." + base64.RawURLEncoding.EncodeToString([]byte(e.mint(e.claims("sh"))))}}
		}, 400, "unsupported_subprotocol"},
		{"bearer subprotocol beside an unsupported protocol", func() upgradeRequest {
			return upgradeRequest{path: base + "/exec?command=sh",
				protocols: []string{"v3.channel.k8s.io", "base64url.bearer.authorization.k8s.io." + base64.RawURLEncoding.EncodeToString([]byte(e.mint(e.claims("sh"))))}}
		}, 400, "unsupported_subprotocol"},
		{"token in the Origin", func() upgradeRequest {
			h := bearer(e.mint(e.claims("sh")))
			h.Set("Origin", "https://"+e.mint(e.claims("sh")))
			return upgradeRequest{path: base + "/exec?command=sh", header: h, protocols: v4}
		}, 403, "origin_not_allowed"},
	}
	// Spend the replayed token once, successfully.
	if st, _, ws := e.tryUpgrade(t, upgradeRequest{path: base + "/exec?command=sh", header: bearer(replayed), protocols: v4}); st != 101 {
		t.Fatalf("first use of a token: status %d", st)
	} else {
		ws.Close()
	}
	var bodies []string
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.req()
			status, body, ws := e.tryUpgrade(t, r)
			if ws != nil {
				ws.Close()
			}
			bodies = append(bodies, body)
			if status != c.status {
				t.Fatalf("status %d, want %d; body %s", status, c.status, body)
			}
			var st struct {
				Kind string
				Code int
			}
			if err := json.Unmarshal([]byte(body), &st); err != nil || st.Kind != "Status" || st.Code != c.status {
				t.Errorf("body is not a Status with code %d: %s", c.status, body)
			}
			line := e.WaitLog(10*time.Second, "session rejected", func(m map[string]any) bool { return m["reason"] == c.reason })
			if line["status"] != float64(c.status) || line["sid"] == "" {
				t.Errorf("log line %v lacks status %d or sid", line, c.status)
			}
		})
	}
	echo("after\n")

	// No token may appear anywhere in the log or the metrics, and the
	// metrics count the refusals by reason.
	// Every minted token is checked in every encoding: itself, its
	// signature, and the base64url of the bearer subprotocol (less its
	// last characters, which depend on what follows).
	metrics := e.metrics(t)
	texts := map[string]string{"log": e.LogText(), "metrics": metrics, "refusal bodies": strings.Join(bodies, "\n")}
	for _, tok := range e.minted {
		enc := base64.RawURLEncoding.EncodeToString([]byte(tok))
		for where, text := range texts {
			for _, form := range []string{tok, strings.Split(tok, ".")[2], enc[:len(enc)-3]} {
				if strings.Contains(text, form) {
					t.Fatalf("a token appears in the proxy's %s: %q", where, form)
				}
			}
		}
	}
	if len(e.minted) < 30 {
		t.Fatalf("only %d tokens minted: the check above proves little", len(e.minted))
	}
	for _, want := range []string{`k8s_ws_proxy_auth_failures_total{`, `reason="expired"`, `reason="replayed"`,
		`k8s_ws_proxy_rejections_total{`, `reason="scope_mismatch"`, `k8s_ws_proxy_sessions_active{`,
		`k8s_ws_proxy_exec_dial_duration_seconds_count{`, `k8s_ws_proxy_keyring_keys{`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// algNone forges a token with alg "none" and no signature.
func (e *env) algNone(c hmac.Claims) string {
	header, _ := json.Marshal(map[string]string{"alg": "none", "kid": hmac.KeyID(e.key), "typ": "JWT"})
	payload, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
}

// TestNotAnUpgrade: plain HTTP to a session path gets 400 with a reason.
func TestNotAnUpgrade(t *testing.T) {
	e := startEnv(t, envOptions{})
	resp, err := http.Get("http://" + e.Addr + "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?command=sh")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
	e.WaitLog(10*time.Second, "session rejected", func(m map[string]any) bool { return m["reason"] == "not_websocket" })
}

// TestTokenPlacements: the four places a token may ride all work.
func TestTokenPlacements(t *testing.T) {
	e := startEnv(t, envOptions{})
	base := "/api/v1/namespaces/" + testNamespace + "/pods/"
	v5 := []string{"v5.channel.k8s.io"}
	tok := func() string { return e.mint(e.claims("true")) }
	cases := map[string]func() upgradeRequest{
		"authorization header": func() upgradeRequest {
			return upgradeRequest{path: base + testPod + "/exec?command=true", header: bearer(tok()), protocols: v5}
		},
		"bearer subprotocol": func() upgradeRequest {
			return upgradeRequest{path: base + testPod + "/exec?command=true",
				protocols: append(v5, "base64url.bearer.authorization.k8s.io."+base64.RawURLEncoding.EncodeToString([]byte(tok())))}
		},
		"query": func() upgradeRequest {
			return upgradeRequest{path: base + testPod + "/exec?command=true&token=" + tok(), protocols: v5}
		},
		"pod segment": func() upgradeRequest {
			return upgradeRequest{path: base + tok() + "/exec?command=true", protocols: v5}
		},
	}
	for name, req := range cases {
		t.Run(name, func(t *testing.T) {
			status, body, ws := e.tryUpgrade(t, req())
			if status != http.StatusSwitchingProtocols {
				t.Fatalf("status %d: %s", status, body)
			}
			defer ws.Close()
			if ws.Subprotocol() != "v5.channel.k8s.io" {
				t.Fatalf("negotiated %q", ws.Subprotocol())
			}
			ws.SetReadDeadline(time.Now().Add(20 * time.Second))
			for {
				_, msg, err := ws.ReadMessage()
				if err != nil {
					t.Fatalf("no status before the connection ended: %v", err)
				}
				if msg[0] == 3 {
					if string(msg[1:]) != `{"metadata":{},"status":"Success"}` {
						t.Fatalf("status %s", msg[1:])
					}
					return
				}
			}
		})
	}
}
