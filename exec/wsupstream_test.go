package exec

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	gwebsocket "github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport/websocket"
)

// The frame relay's upgrader is client-go's transport/websocket with
// other buffers: for every answer an upstream can give, it must return the
// same error, decide the SPDY fallback the same way, and pass the same
// headers (auth, impersonation, subprotocols) as client-go's own.
func TestUpgraderMatchesClientGo(t *testing.T) {
	status := `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"p\" is forbidden: User \"u\" cannot create resource \"pods/exec\"","reason":"Forbidden","code":403}`
	answers := map[string]http.HandlerFunc{
		"status 403": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, status)
		},
		"plain 400": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "upgrade request required", http.StatusBadRequest)
		},
		"empty 500": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) },
		"other subprotocol": func(w http.ResponseWriter, r *http.Request) {
			up := gwebsocket.Upgrader{Subprotocols: []string{"base64.channel.k8s.io"}}
			if c, err := up.Upgrade(w, r, http.Header{"Sec-Websocket-Protocol": {"base64.channel.k8s.io"}}); err == nil {
				c.Close()
			}
		},
		"v5 accepted": func(w http.ResponseWriter, r *http.Request) {
			if got := r.Header.Get("Authorization") + " " + r.Header.Get("Impersonate-User"); got != "Bearer tok alice" {
				http.Error(w, "headers: "+got, http.StatusUnauthorized)
				return
			}
			up := gwebsocket.Upgrader{Subprotocols: []string{"v5.channel.k8s.io"}}
			if c, err := up.Upgrade(w, r, nil); err == nil {
				c.Close()
			}
		},
	}
	negotiate := map[string]func(*rest.Config, *http.Request, ...string) (*gwebsocket.Conn, error){
		"client-go": func(cfg *rest.Config, req *http.Request, p ...string) (*gwebsocket.Conn, error) {
			rt, holder, err := websocket.RoundTripperFor(cfg)
			if err != nil {
				return nil, err
			}
			return websocket.Negotiate(rt, holder, req, p...)
		},
		"ours": func(cfg *rest.Config, req *http.Request, p ...string) (*gwebsocket.Conn, error) {
			rt, holder, err := upgraderFor(cfg)
			if err != nil {
				return nil, err
			}
			return websocket.Negotiate(rt, holder, req, p...)
		},
	}
	for name, h := range answers {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			defer srv.Close()
			cfg := &rest.Config{Host: srv.URL, BearerToken: "tok", Impersonate: rest.ImpersonationConfig{UserName: "alice"}}
			got := map[string]string{}
			for who, neg := range negotiate {
				req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/api/v1/namespaces/ns/pods/p/exec", nil)
				if err != nil {
					t.Fatal(err)
				}
				conn, err := neg(cfg, req, "v5.channel.k8s.io", "v4.channel.k8s.io")
				if err != nil {
					got[who] = fmt.Sprintf("error %q fallback %v", err, shouldFallback(err))
					continue
				}
				got[who] = "upgraded to " + conn.Subprotocol()
				conn.Close()
			}
			if got["ours"] != got["client-go"] {
				t.Fatalf("ours:      %s\nclient-go: %s", got["ours"], got["client-go"])
			}
			if name == "v5 accepted" && got["ours"] != "upgraded to v5.channel.k8s.io" {
				t.Fatalf("did not upgrade: %s", got["ours"])
			}
			if name != "v5 accepted" && !strings.Contains(got["ours"], "fallback true") {
				t.Fatalf("a refusal must allow the SPDY fallback: %s", got["ours"])
			}
			t.Log(got["ours"])
		})
	}
}
