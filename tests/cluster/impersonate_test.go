package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// auditPolicy is the package API server's: exec and attach at Metadata,
// nothing else, written to kubeapi's AuditLogPath.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    resources:
      - group: ""
        resources: ["pods/exec", "pods/attach"]
  - level: None
`

// auditEvent is the part of an audit.k8s.io/v1 Event the tests read.
type auditEvent struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ImpersonatedUser *struct {
		Username string              `json:"username"`
		Groups   []string            `json:"groups"`
		Extra    map[string][]string `json:"extra"`
	} `json:"impersonatedUser"`
	ObjectRef *struct {
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// execAuditEvents returns the audit log's exec events of the workload pod
// at stage ResponseComplete or Panic (a stream's event is written when
// the stream ends) or ResponseStarted (an upgrade's).
func execAuditEvents(t *testing.T) []auditEvent {
	t.Helper()
	f, err := os.Open(api.AuditLogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e auditEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.ObjectRef == nil || e.ObjectRef.Subresource != "exec" ||
			e.ObjectRef.Name != workloadPod {
			continue
		}
		out = append(out, e)
	}
	return out
}

// impersonationRBAC applies the chart's impersonation ClusterRole and
// binding (rendered with the given values) and removes them at the end,
// so later tests see the chart's default RBAC again.
func impersonationRBAC(t *testing.T, set ...string) {
	t.Helper()
	args := []string{"--set", "impersonation.enabled=true"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	objs := renderChart(t, tools.HelmV3Version, releaseNamespace, args...)
	var mine []*unstructured.Unstructured
	for _, o := range objs {
		if strings.HasSuffix(o.GetName(), "-impersonate") {
			mine = append(mine, o)
		}
	}
	if len(mine) != 2 {
		t.Fatalf("chart rendered %d impersonation objects, want a ClusterRole and a binding", len(mine))
	}
	a := newApplier(t)
	a.mustApply(t, mine...)
	t.Cleanup(func() {
		for _, o := range mine {
			_ = a.delete(context.Background(), o)
		}
	})
}

// grantExec lets group exec into the workload (get pods + create
// pods/exec), and user only look the pod up.
func grantExec(t *testing.T, group, lookupOnlyUser string) {
	t.Helper()
	ctx := context.Background()
	rbac := api.AdminClient().RbacV1()
	roles := []rbacv1.Role{
		{ObjectMeta: metav1.ObjectMeta{Name: "impersonation-exec"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create", "get"}},
		}},
		{ObjectMeta: metav1.ObjectMeta{Name: "impersonation-lookup"}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		}},
	}
	bindings := []rbacv1.RoleBinding{
		{ObjectMeta: metav1.ObjectMeta{Name: "impersonation-exec"}, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "impersonation-exec"},
			Subjects: []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: group}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "impersonation-lookup"}, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "impersonation-lookup"},
			Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: lookupOnlyUser}}},
	}
	for i := range roles {
		if _, err := rbac.Roles(workloadNamespace).Create(ctx, &roles[i], metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := rbac.RoleBindings(workloadNamespace).Create(ctx, &bindings[i], metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for i := range roles {
			_ = rbac.RoleBindings(workloadNamespace).Delete(ctx, bindings[i].Name, metav1.DeleteOptions{})
			_ = rbac.Roles(workloadNamespace).Delete(ctx, roles[i].Name, metav1.DeleteOptions{})
		}
	})
}

// canImpersonate asks the authorizer whether the proxy's ServiceAccount
// may impersonate a user or group name.
func canImpersonate(ctx context.Context, resource, name string) (bool, string, error) {
	return canI(ctx, releaseNamespace, proxyServiceAccount, authorizationv1.ResourceAttributes{Verb: "impersonate", Resource: resource, Name: name})
}

func TestImpersonation(t *testing.T) {
	chartInstalled(t)
	kl := workload(t)
	impersonationRBAC(t, "impersonation.users={alice@example.com,bob@example.com}", "impersonation.groups={devs}")
	grantExec(t, "devs", "bob@example.com")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	proxyUser := "system:serviceaccount:" + releaseNamespace + ":" + proxyServiceAccount

	// (c) The proxy may impersonate exactly what the values list.
	for _, tc := range []struct {
		resource, name string
		want           bool
	}{
		{"users", "alice@example.com", true}, {"users", "bob@example.com", true}, {"users", "mallory", false},
		{"users", "system:admin", false}, {"groups", "devs", true}, {"groups", "system:masters", false},
	} {
		err := pollUntil(ctx, func() error {
			got, reason, err := canImpersonate(ctx, tc.resource, tc.name)
			if err != nil {
				return err
			}
			if got != tc.want {
				return &testError{tc.resource + "/" + tc.name + ": allowed=" + boolString(got) + " " + reason}
			}
			return nil
		})
		if err != nil {
			t.Errorf("impersonate %s %q: want allowed=%v: %v", tc.resource, tc.name, tc.want, err)
		}
	}
	waitAuthorized(t, releaseNamespace, proxyServiceAccount, authorizationv1.ResourceAttributes{Verb: "impersonate", Resource: "users", Name: "alice@example.com"}, true)

	p := startProxy(t, proxyOptions{extra: []string{"--impersonate"}})

	t.Run("a-audit-names-the-user", func(t *testing.T) {
		c := p.claims(false, "sh", "-c", "echo impersonated")
		c.SID = "sess-imp-a"
		c.Groups = []string{"devs"}
		var out bytes.Buffer
		if err := clientGoExec(ctx, t, p, c, remotecommand.StreamOptions{Stdout: &out, Stdin: strings.NewReader("")}); err != nil {
			t.Fatalf("exec as alice: %v", err)
		}
		if out.String() != "impersonated\n" {
			t.Fatalf("stdout %q", out.String())
		}
		var found *auditEvent
		err := pollUntil(ctx, func() error {
			for _, e := range execAuditEvents(t) {
				if e.ImpersonatedUser != nil && e.ImpersonatedUser.Extra[strings.ToLower("k8s-ws-proxy.io/session-id")] != nil &&
					e.ImpersonatedUser.Extra["k8s-ws-proxy.io/session-id"][0] == "sess-imp-a" {
					found = &e
					return nil
				}
			}
			return &testError{"no exec audit event for sess-imp-a yet"}
		})
		if err != nil {
			t.Fatal(err)
		}
		line, _ := json.Marshal(found)
		t.Logf("audit event: %s", line)
		if found.User.Username != proxyUser {
			t.Errorf("user.username = %q, want the impersonator %q", found.User.Username, proxyUser)
		}
		if found.ImpersonatedUser.Username != "alice@example.com" {
			t.Errorf("impersonatedUser.username = %q", found.ImpersonatedUser.Username)
		}
		// The API server adds system:authenticated to the groups sent.
		if !slices.Contains(found.ImpersonatedUser.Groups, "devs") {
			t.Errorf("impersonatedUser.groups = %v", found.ImpersonatedUser.Groups)
		}
		if n := found.ImpersonatedUser.Extra["k8s-ws-proxy.io/node"]; len(n) != 1 || n[0] != workloadNode {
			t.Errorf("node extra = %v", n)
		}
	})

	t.Run("b-no-right-403-before-upgrade", func(t *testing.T) {
		before := kl.requests()
		c := p.claims(false, "sh", "-c", "touch /tmp/should-not-run")
		c.Subject = "bob@example.com"
		c.SID = "sess-imp-b"
		_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(testenv.ExecURL(p.Addr, c, true), "http"),
			http.Header{"Authorization": {"Bearer " + testenv.Mint(t, p.signer, c)}, "Sec-WebSocket-Protocol": {"v5.channel.k8s.io"}})
		if err == nil {
			t.Fatal("bob's session was upgraded")
		}
		if resp == nil {
			t.Fatalf("no HTTP answer: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusForbidden || !bytes.Contains(body, []byte(`bob@example.com`)) || !bytes.Contains(body, []byte(`"kind":"Status"`)) {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
		t.Logf("refusal: %s", bytes.TrimSpace(body))
		if after := kl.requests(); !equalCounts(before, after) {
			t.Errorf("the kubelet was reached: %v -> %v", before, after)
		}
		for _, e := range execAuditEvents(t) {
			if e.ImpersonatedUser != nil && e.ImpersonatedUser.Username == "bob@example.com" {
				t.Errorf("an exec reached the API server as bob: %+v", e)
			}
		}
	})

	// (d) Without --impersonate nothing changes: the exec runs as the
	// proxy's ServiceAccount, for a user who has no rights of their own.
	t.Run("d-off-unchanged", func(t *testing.T) {
		q := startProxy(t, proxyOptions{})
		c := q.claims(false, "sh", "-c", "echo plain")
		c.Subject = "mallory"
		c.SID = "sess-imp-d"
		var out bytes.Buffer
		if err := clientGoExec(ctx, t, q, c, remotecommand.StreamOptions{Stdout: &out, Stdin: strings.NewReader("")}); err != nil {
			t.Fatalf("exec: %v", err)
		}
		if out.String() != "plain\n" {
			t.Fatalf("stdout %q", out.String())
		}
		seen := false
		err := pollUntil(ctx, func() error {
			for _, e := range execAuditEvents(t) {
				if !strings.Contains(e.RequestURI, "echo+plain") {
					continue
				}
				seen = true
				if e.ImpersonatedUser != nil || e.User.Username != proxyUser {
					t.Errorf("without --impersonate the exec was audited as %q / %+v", e.User.Username, e.ImpersonatedUser)
				}
			}
			if !seen {
				return &testError{"no audit event of the plain exec yet"}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

type testError struct{ s string }

func (e *testError) Error() string { return e.s }

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
