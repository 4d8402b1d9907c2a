package proxy

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testlog"
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
	var logs testlog.Buffer
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
	st := h.refused("/api/v1/namespaces/ns/pods/pod/exec?command=true&stdin=true&stdout=true&stderr=true&container=c", tok, http.StatusForbidden)
	if st.Code != http.StatusForbidden || !strings.Contains(st.Message, `namespace "ns" is not open to sessions`) {
		t.Fatalf("Status %+v: want a 403 Status saying the namespace is not open", st)
	}
	if l := logs.String(); !strings.Contains(l, `"reason":"namespace_denied"`) {
		t.Fatalf("no namespace_denied rejection in the log:\n%s", l)
	}
}
