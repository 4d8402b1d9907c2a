package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testlog"
)

func loggingHarness(t *testing.T) (*harness, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	h := newHarness(t, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(logs, nil)) })
	return h, logs
}

// claims is a valid claim set for the harness's pod ns/pod, container c.
func (h *harness) claims(command ...string) hmac.Claims {
	now := time.Now()
	return hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{ID: hmac.NewID(), IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))},
		Namespace:        "ns", Pod: "pod", Container: "c", Command: command, SID: "sid-" + hmac.NewID()[:8],
	}
}

func (h *harness) mint(c hmac.Claims) string {
	h.t.Helper()
	tok, err := h.signer.Sign(c)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

func (h *harness) restConfig(token string) *rest.Config {
	return &rest.Config{Host: h.url, BearerToken: token, Timeout: 30 * time.Second}
}

// TestKubectlDiscovery resolves "pods" the way kubectl does, through
// client-go's discovery and REST mapper, and finds only what the proxy
// serves.
func TestKubectlDiscovery(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	dc, err := discovery.NewDiscoveryClientForConfig(h.restConfig("unused"))
	if err != nil {
		t.Fatal(err)
	}
	groups, resources, err := dc.ServerGroupsAndResources()
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	if len(groups) != 1 || groups[0].Name != "" || groups[0].PreferredVersion.Version != "v1" {
		t.Fatalf("groups %+v, want only the core group at v1", groups)
	}
	var names []string
	for _, rl := range resources {
		if rl.GroupVersion != "v1" {
			t.Errorf("resource list for %q; want only v1", rl.GroupVersion)
		}
		for _, r := range rl.APIResources {
			names = append(names, r.Name)
		}
	}
	slices.Sort(names)
	if want := []string{"pods", "pods/attach", "pods/exec"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("resources %q, want %q", names, want)
	}
	gr, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		t.Fatal(err)
	}
	// kubectl's mapper: discovery plus the short names it lists.
	mapper := restmapper.NewShortcutExpander(restmapper.NewDiscoveryRESTMapper(gr), dc, nil)
	for _, arg := range []string{"pods", "pod", "po"} {
		gvr, err := mapper.ResourceFor(corev1.SchemeGroupVersion.WithResource(arg).GroupResource().WithVersion(""))
		if err != nil || gvr.Resource != "pods" || gvr.Version != "v1" {
			t.Errorf("mapping %q: %v, %v", arg, gvr, err)
		}
	}
}

// TestKubectlGetPodReduced: the token's own pod comes back reduced to what
// kubectl reads, and the token still opens its session afterwards.
func TestKubectlGetPodReduced(t *testing.T) {
	t.Parallel()
	h, logs := loggingHarness(t)
	c := h.claims("sh", "-c", "echo still-valid")
	c.TTY = true
	tok := h.mint(c)
	cs, err := kubernetes.NewForConfig(h.restConfig(tok))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // kubectl may ask more than once
		pod, err := cs.CoreV1().Pods("ns").Get(t.Context(), "pod", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("GET pod: %v", err)
		}
		want := &corev1.Pod{
			TypeMeta: metav1.TypeMeta{},
			ObjectMeta: metav1.ObjectMeta{Name: "pod", Namespace: "ns", UID: pod.UID,
				Annotations: map[string]string{defaultContainerAnnotation: "c"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", TTY: true}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
				Name: "c", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
			}}},
		}
		if pod.UID == "" {
			t.Error("uid is empty; the backend's pod has one")
		}
		if !reflect.DeepEqual(pod, want) {
			got, _ := json.Marshal(pod)
			w, _ := json.Marshal(want)
			// The backend's pod has image, command and node name: all dropped.
			t.Fatalf("pod\n got %s\nwant %s", got, w)
		}
	}
	// The token is still unused: it opens exactly one session.
	ws := h.dialToken(tok, "/api/v1/namespaces/ns/pods/pod/exec?command=sh&command=-c&command=echo+still-valid&tty=true")
	out, _ := readAll(t, ws, DefaultMaxFrameSize, binaryFrame)
	if !strings.Contains(string(out), "still-valid") {
		t.Fatalf("session after GET pod printed %q", out)
	}
	if _, err := cs.CoreV1().Pods("ns").Get(t.Context(), "pod", metav1.GetOptions{}); !apierrors.IsUnauthorized(err) || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("GET pod with a used token: %v, want 401 replayed", err)
	}
	if strings.Contains(logs.String(), tok) {
		t.Fatal("the token appears in the log")
	}
	if !strings.Contains(logs.String(), `"event":"get_pod"`) {
		t.Fatalf("no get_pod log line:\n%s", logs)
	}
}

func (h *harness) dialToken(tok, path string) *websocket.Conn {
	h.t.Helper()
	d := websocket.Dialer{Subprotocols: []string{ProtocolV5}}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(h.url, "http")+path, http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		h.t.Fatalf("dial: %v (%v)", err, resp)
	}
	h.t.Cleanup(func() { ws.Close() })
	return ws
}

// getStatus sends one request and decodes the Status answer.
func getStatus(t *testing.T, method, u string, hdr http.Header) (int, metav1.Status) {
	t.Helper()
	var st metav1.Status
	code, body := jsonCall(t, method, u, hdr, &st)
	if st.Kind != "Status" {
		t.Fatalf("%s %s: body %q is not a Status", method, u, body)
	}
	if int(st.Code) != code {
		t.Fatalf("%s %s: Status code %d, HTTP %d", method, u, st.Code, code)
	}
	return code, st
}

func TestKubectlGetPodRefusals(t *testing.T) {
	t.Parallel()
	h, logs := loggingHarness(t)
	good := h.claims("id")
	otherNode := h.claims("id")
	otherNode.Node = "elsewhere"
	missingPod := h.claims("id")
	missingPod.Pod = "gone"
	missingContainer := h.claims("id")
	missingContainer.Container = "nope"
	expired := h.claims("id")
	expired.IssuedAt = jwt.NewNumericDate(time.Now().Add(-3 * time.Minute))
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Minute))
	used := h.mint(h.claims("id"))
	if _, _, err := h.srv.cfg.Verifier.(TokenPeeker).Peek(used); err != nil {
		t.Fatal(err)
	}
	if _, err := h.srv.cfg.Verifier.(*hmac.Verifier).Verify(used); err != nil {
		t.Fatal(err)
	}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	for _, tc := range []struct {
		name, path string
		hdr        http.Header
		status     int
		message    string
	}{
		{"no token", "/api/v1/namespaces/ns/pods/pod", nil, 401, "no session token"},
		{"not bearer", "/api/v1/namespaces/ns/pods/pod", http.Header{"Authorization": {"Basic eDp5"}}, 401, "no session token"},
		{"bad token", "/api/v1/namespaces/ns/pods/pod", bearer("eyJ.x.y"), 401, "session token rejected: malformed"},
		{"expired", "/api/v1/namespaces/ns/pods/pod", bearer(h.mint(expired)), 401, "session token rejected: expired"},
		{"used", "/api/v1/namespaces/ns/pods/pod", bearer(used), 401, "session token rejected: replayed"},
		{"another pod", "/api/v1/namespaces/ns/pods/other", bearer(h.mint(good)), 403, "does not grant access to pod ns/other"},
		{"another namespace", "/api/v1/namespaces/kube-system/pods/pod", bearer(h.mint(good)), 403, "does not grant access to pod kube-system/pod"},
		{"another node", "/api/v1/namespaces/ns/pods/pod", bearer(h.mint(otherNode)), 403, "token is for another node"},
		{"pod gone", "/api/v1/namespaces/ns/pods/gone", bearer(h.mint(missingPod)), 404, "pod ns/gone not found"},
		{"container gone", "/api/v1/namespaces/ns/pods/pod", bearer(h.mint(missingContainer)), 404, `container "nope" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, st := getStatus(t, "GET", h.url+tc.path, tc.hdr)
			if status != tc.status || !strings.Contains(st.Message, tc.message) {
				t.Fatalf("%d %q, want %d with %q", status, st.Message, tc.status, tc.message)
			}
		})
	}
	// A refused GET pod consumes nothing either: the good token still works.
	if _, err := h.srv.cfg.Verifier.(*hmac.Verifier).Verify(h.mint(good)); err != nil {
		t.Fatalf("good token after refusals: %v", err)
	}
	if n := strings.Count(logs.String(), `"request":"get_pod"`); n != 10 {
		t.Fatalf("%d refusal log lines for 10 refusals:\n%s", n, logs)
	}
}

// TestKubectlNotFoundStatus: every path the proxy does not serve is a 404
// Status, and a token in the path stays out of the log.
func TestKubectlNotFoundStatus(t *testing.T) {
	t.Parallel()
	h, logs := loggingHarness(t)
	tok := h.mint(h.claims("id"))
	for _, tc := range []struct{ method, path string }{
		{"GET", "/version"},
		{"GET", "/api/v2"},
		{"GET", "/apis/apps/v1"},
		{"GET", "/api/v1/namespaces/ns/pods"},
		{"GET", "/api/v1/namespaces/ns/secrets/s"},
		{"GET", "/api/v1/namespaces/ns/pods/pod/log"},
		{"GET", "/api/v1/namespaces/ns/pods/" + tok + "/portforward"},
		{"DELETE", "/api/v1/namespaces/ns/pods/pod"},
		{"PUT", "/api/v1/namespaces/ns/pods/pod/exec"},
		{"POST", "/api"},
		{"GET", "/favicon.ico"},
	} {
		status, st := getStatus(t, tc.method, h.url+tc.path, nil)
		if status != http.StatusNotFound || st.Reason != metav1.StatusReasonNotFound || st.Message != "the server could not find the requested resource" {
			t.Errorf("%s %s: %d %+v", tc.method, tc.path, status, st)
		}
	}
	if strings.Contains(logs.String(), tok) {
		t.Fatalf("a token in the path reached the log:\n%s", logs)
	}
	if !strings.Contains(logs.String(), `"path":"/api/v1/namespaces/ns/pods/REDACTED/portforward"`) {
		t.Fatalf("no redacted path in the log:\n%s", logs)
	}
}

// streamAsKubectl runs a command with client-go's executors wired exactly as
// kubectl 1.37 wires them: WebSocket first, SPDY POST on an upgrade failure.
func (h *harness) streamAsKubectl(tok string, command ...string) (string, error) {
	h.t.Helper()
	cfg := h.restConfig(tok)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("ns").Name("pod").SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "c", Command: command, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	spdyExec, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		h.t.Fatal(err)
	}
	wsExec, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		h.t.Fatal(err)
	}
	exec, err := remotecommand.NewFallbackExecutor(wsExec, spdyExec, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(h.t.Context(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer // written concurrently: one each
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	return out.String() + errOut.String(), err
}

// TestSPDYRetryShowsTheRefusal: when the WebSocket upgrade is refused,
// client-go retries over SPDY and shows that second answer; it must carry
// the first refusal's reason (before: "405 Method Not Allowed" in text).
func TestSPDYRetryShowsTheRefusal(t *testing.T) {
	t.Parallel()
	h, logs := loggingHarness(t)
	expired := h.claims("id")
	expired.IssuedAt = jwt.NewNumericDate(time.Now().Add(-3 * time.Minute))
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Minute))
	otherNode := h.claims("id")
	otherNode.Node = "elsewhere"
	replayed := h.mint(h.claims("id"))
	if _, err := h.srv.cfg.Verifier.(*hmac.Verifier).Verify(replayed); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token string
		command     []string
		message     string
	}{
		// Consumed by the WebSocket attempt, then refused for its scope.
		{"command mismatch", h.mint(h.claims("id")), []string{"whoami"}, "command in the query does not match the token"},
		{"expired", h.mint(expired), []string{"id"}, "session token rejected: expired"},
		{"replayed", replayed, []string{"id"}, "session token rejected: replayed"},
		{"wrong node", h.mint(otherNode), []string{"id"}, "token is for another node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.streamAsKubectl(tc.token, tc.command...)
			// client-go's SPDY dialer turns a Status answer into this
			// error; kubectl prints it after "error: ".
			if want := "unable to upgrade connection: " + tc.message; err == nil || err.Error() != want {
				t.Fatalf("client-go shows %v, want %q", err, want)
			}
		})
	}
	if n := strings.Count(logs.String(), `"request":"spdy"`); n != 4 {
		t.Errorf("%d SPDY refusal log lines, want 4:\n%s", n, logs)
	}

	// A fresh token that a SPDY-only client POSTs is told why, and stays
	// unused for a WebSocket client.
	tok := h.mint(h.claims("id"))
	q := url.Values{"command": {"id"}, "container": {"c"}, "stdout": {"true"}}
	status, st := getStatus(t, "POST", h.url+"/api/v1/namespaces/ns/pods/pod/exec?"+q.Encode(),
		http.Header{"Authorization": {"Bearer " + tok}, "Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"v4.channel.k8s.io"}})
	if status != http.StatusBadRequest || !strings.Contains(st.Message, "SPDY is not supported") {
		t.Fatalf("SPDY POST with a good token: %d %q", status, st.Message)
	}
	out, err := h.streamAsKubectl(tok, "id")
	if err != nil || !strings.Contains(out, "uid=") {
		t.Fatalf("the token after a SPDY POST: %q, %v", out, err)
	}
}
