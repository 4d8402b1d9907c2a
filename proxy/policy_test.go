package proxy

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

func TestNamespacePolicyAllows(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		allowed, denied []string
		ns              string
		want            bool
	}{
		{nil, nil, "kube-system", true},
		{nil, []string{"kube-system"}, "kube-system", false},
		{nil, []string{"kube-system"}, "kube-public", true},
		{nil, []string{"kube-*"}, "kube-public", false},
		{[]string{"team-*"}, nil, "team-a", true},
		{[]string{"team-*"}, nil, "apps", false},
		{[]string{"team-*"}, []string{"team-secret"}, "team-secret", false},
		{[]string{"team-?"}, nil, "team-ab", false},
		{[]string{"team-[ab]"}, nil, "team-b", true},
		{[]string{"*"}, []string{"kube-system"}, "default", true},
	} {
		p, err := NewNamespacePolicy(tc.allowed, tc.denied)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Allows(tc.ns); got != tc.want {
			t.Errorf("allowed=%v denied=%v: Allows(%q) = %v, want %v", tc.allowed, tc.denied, tc.ns, got, tc.want)
		}
	}
	for _, bad := range [][]string{{"team-["}, {""}} {
		if _, err := NewNamespacePolicy(nil, bad); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

// A denied namespace is refused before the upgrade with 403 and a Status
// naming namespace_denied; the same token shape for an allowed namespace
// opens a session.
func TestNamespaceDeniedBeforeUpgrade(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	h := newHarness(t, func(c *Config) {
		p, err := NewNamespacePolicy(nil, []string{"n?"})
		if err != nil {
			t.Fatal(err)
		}
		c.Namespaces = p
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	now := time.Now()
	tok, err := h.signer.Sign(hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
		Namespace:        "ns", Pod: "pod", Container: "c", Command: []string{"true"}, Stdin: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	d := websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io"}}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(h.url, "http")+"/api/v1/namespaces/ns/pods/pod/exec?command=true&stdin=true&stdout=true&stderr=true&container=c",
		http.Header{"Authorization": {"Bearer " + tok}})
	if err == nil {
		ws.Close()
		t.Fatal("session opened in a denied namespace")
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("dial: %v, response %v; want 403", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	var st metav1.Status
	if err := json.Unmarshal(body, &st); err != nil || st.Code != http.StatusForbidden || !strings.Contains(st.Message, `namespace "ns" is not open to sessions`) {
		t.Fatalf("body %s (%v): want a 403 Status saying the namespace is not open", body, err)
	}
	if l := logs.String(); !strings.Contains(l, `"reason":"namespace_denied"`) {
		t.Fatalf("no namespace_denied rejection in the log:\n%s", l)
	}
}
