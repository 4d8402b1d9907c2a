package localexec

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testpki"
)

var testPods = []Pod{
	{Namespace: "default", Name: "demo", NodeName: "node-a", Containers: []Container{{Name: "shell"}}},
	{Namespace: "team", Name: "two", NodeName: "node-b", Containers: []Container{
		{Name: "app", Entrypoint: []string{"/bin/sh", "-c", "echo attached; exit 0"}},
		{Name: "side", Dir: os.TempDir()},
	}},
}

func newServer(t *testing.T, mod func(*Config)) *Server {
	t.Helper()
	cfg := Config{Pods: testPods, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))}
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func httpServer(t *testing.T, s *Server) *httptest.Server {
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return hs
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewServerValidates(t *testing.T) {
	for _, pods := range [][]Pod{
		nil,
		{{Namespace: "default", Name: "x"}},
		{{Namespace: "default", Name: "x", Containers: []Container{{Name: "a"}}}, {Namespace: "default", Name: "x", Containers: []Container{{Name: "b"}}}},
		{{Namespace: "default", Name: "x", Containers: []Container{{Name: "a", Env: []string{"=1"}}}}},
	} {
		if _, err := NewServer(Config{Pods: pods}); err == nil {
			t.Errorf("NewServer(%+v) succeeded", pods)
		}
	}
}

// Every refusal is a plain HTTP response with a metav1.Status body, before
// any upgrade, whichever upgrade the client asked for.
func TestRefusedBeforeUpgrade(t *testing.T) {
	hs := httpServer(t, newServer(t, nil))
	upgrades := map[string]http.Header{
		"websocket": {"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Protocol": {"v4.channel.k8s.io"}},
		"spdy": {"Connection": {"Upgrade"}, "Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"v4.channel.k8s.io"}},
	}
	cases := []struct {
		path   string
		code   int
		reason metav1.StatusReason
		msg    string
	}{
		{"/api/v1/namespaces/default/pods/nope/exec?command=true&stdout=true", 404, metav1.StatusReasonNotFound, `pods "nope" not found`},
		{"/api/v1/namespaces/other/pods/demo/exec?command=true&stdout=true", 404, metav1.StatusReasonNotFound, `pods "demo" not found`},
		{"/api/v1/namespaces/default/pods/demo/exec?command=true&stdout=true&container=nope", 404, metav1.StatusReasonNotFound, "container nope is not valid for pod demo"},
		{"/api/v1/namespaces/default/pods/demo/attach?stdout=true&container=nope", 404, metav1.StatusReasonNotFound, "container nope is not valid for pod demo"},
		{"/api/v1/namespaces/team/pods/two/exec?command=true&stdout=true", 400, metav1.StatusReasonBadRequest, "a container name must be specified for pod two, choose one of: [app side]"},
		{"/api/v1/namespaces/default/pods/demo/exec?stdout=true", 400, metav1.StatusReasonBadRequest, "you must specify at least one command for the container"},
		{"/api/v1/namespaces/default/pods/demo/exec?command=true&stdout=false&stdin=0", 400, metav1.StatusReasonBadRequest, "you must specify at least 1 of stdin, stdout, stderr"},
		{"/api/v1/namespaces/default/pods/demo/exec?command=true&tty=true&stderr=true", 400, metav1.StatusReasonBadRequest, "you must specify at least 1 of stdin, stdout, stderr"},
		{"/exec/default/nope/shell?command=true&output=1", 404, metav1.StatusReasonNotFound, `pods "nope" not found`},
		{"/exec/default/demo/nope?command=true&output=1", 404, metav1.StatusReasonNotFound, "container nope is not valid for pod demo"},
		{"/exec/default/demo/00000000-0000-0000-0000-000000000000/shell?command=true&output=1", 404, metav1.StatusReasonNotFound, `pods "demo" not found`},
		{"/exec/default/demo/shell?output=1", 400, metav1.StatusReasonBadRequest, "you must specify at least one command for the container"},
		{"/exec/default/demo/shell?command=true&output=true", 400, metav1.StatusReasonBadRequest, "you must specify at least 1 of stdin, stdout, stderr"},
		{"/attach/default/nope/shell?output=1", 404, metav1.StatusReasonNotFound, `pods "nope" not found`},
		{"/api/v1/namespaces/default/pods/demo/portforward", 404, metav1.StatusReasonNotFound, "not found"},
	}
	for name, hdr := range upgrades {
		for _, c := range cases {
			for _, method := range []string{"GET", "POST"} {
				req, _ := http.NewRequest(method, hs.URL+c.path, nil)
				req.Header = hdr.Clone()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var st metav1.Status
				if err := json.Unmarshal(body, &st); err != nil {
					t.Errorf("%s %s %s: body %q: %v", name, method, c.path, body, err)
					continue
				}
				if resp.StatusCode != c.code || st.Code != int32(c.code) || st.Kind != "Status" || st.APIVersion != "v1" ||
					st.Status != metav1.StatusFailure || st.Reason != c.reason || !strings.Contains(st.Message, c.msg) ||
					resp.Header.Get("Content-Type") != "application/json" {
					t.Errorf("%s %s %s: %d %+v", name, method, c.path, resp.StatusCode, st)
				}
			}
		}
	}
	// The wrong method on a stream path.
	req, _ := http.NewRequest("PUT", hs.URL+"/api/v1/namespaces/default/pods/demo/exec?command=true&stdout=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT exec: %d", resp.StatusCode)
	}
}

func TestGetPod(t *testing.T) {
	srv := newServer(t, nil)
	hs := httpServer(t, srv)
	ctx := testCtx(t)
	for name, cfg := range map[string]*rest.Config{
		"json": {Host: hs.URL},
		"protobuf": {Host: hs.URL, ContentConfig: rest.ContentConfig{ContentType: runtime.ContentTypeProtobuf,
			AcceptContentTypes: runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON}},
	} {
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		pod, err := cs.CoreV1().Pods("team").Get(ctx, "two", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if pod.Name != "two" || pod.Namespace != "team" || pod.Spec.NodeName != "node-b" || pod.Status.Phase != corev1.PodRunning ||
			len(pod.Spec.Containers) != 2 || pod.Spec.Containers[0].Name != "app" || pod.Spec.Containers[1].Name != "side" ||
			pod.UID != podUID(srv.pods["team/two"]) || len(pod.UID) != 36 {
			t.Errorf("%s: pod %+v", name, pod)
		}
		if _, err := cs.CoreV1().Pods("team").Get(ctx, "three", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s: missing pod: %v", name, err)
		}
	}
	// The media type served follows the client's first preference.
	for accept, want := range map[string]string{
		"":                 "application/json",
		"application/json": "application/json",
		"application/vnd.kubernetes.protobuf, application/json":       runtime.ContentTypeProtobuf,
		"application/json;q=0.9, application/vnd.kubernetes.protobuf": "application/json",
		"*/*": "application/json",
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/api/v1/namespaces/team/pods/two", nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Content-Type"); got != want {
			t.Errorf("Accept %q: Content-Type %q, want %q", accept, got, want)
		}
	}
	resp, err := http.Get(hs.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz %d", resp.StatusCode)
	}
}

// wsDial opens a raw WebSocket exec, as guacd would (v4, no headers).
func wsDial(t *testing.T, hs *httptest.Server, path string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}}
	c, resp, err := d.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+path, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", path, err, resp)
	}
	if c.Subprotocol() != "v4.channel.k8s.io" {
		t.Fatalf("subprotocol %q", c.Subprotocol())
	}
	return c
}

// readFrames collects channel data until the server closes.
func readFrames(c *websocket.Conn) (map[byte][]byte, error) {
	got := map[byte][]byte{}
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) || errors.Is(err, io.EOF) {
				return got, nil
			}
			return got, err
		}
		if len(msg) == 0 {
			return got, errors.New("frame without a channel byte")
		}
		got[msg[0]] = append(got[msg[0]], msg[1:]...)
	}
}

// The status on channel 3 is the upstream metav1.Status, exit code included,
// after all of stdout.
func TestV4StatusOnWire(t *testing.T) {
	hs := httpServer(t, newServer(t, nil))
	q := url.Values{"command": {"sh", "-c", "echo out; echo err >&2; exit 3"}, "stdout": {"true"}, "stderr": {"true"}}
	c := wsDial(t, hs, "/api/v1/namespaces/default/pods/demo/exec?"+q.Encode())
	defer c.Close()
	got, err := readFrames(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got[1]) != "out\n" || string(got[2]) != "err\n" {
		t.Errorf("stdout %q stderr %q", got[1], got[2])
	}
	var st metav1.Status
	if err := json.Unmarshal(got[3], &st); err != nil {
		t.Fatalf("status %q: %v", got[3], err)
	}
	if st.Status != metav1.StatusFailure || st.Reason != "NonZeroExitCode" || st.Details == nil ||
		len(st.Details.Causes) != 1 || st.Details.Causes[0].Type != "ExitCode" || st.Details.Causes[0].Message != "3" {
		t.Errorf("status %s", got[3])
	}

	c2 := wsDial(t, hs, "/exec/default/demo/shell?command=true&output=1")
	defer c2.Close()
	got, err = readFrames(c2)
	if err != nil {
		t.Fatal(err)
	}
	if string(got[3]) != `{"status":"Success"}` {
		t.Errorf("success status %q", got[3])
	}
}

func readPIDs(t *testing.T, s string) []int {
	t.Helper()
	var pids []int
	for _, f := range strings.Fields(s) {
		p, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pid %q: %v", f, err)
		}
		pids = append(pids, p)
	}
	return pids
}

// A client that drops the TCP connection without a close frame (guacd
// leaving) ends the session: the whole tree, tty or not, job-control groups
// included, is gone within 2 s.
func TestDisconnectKillsProcessTree(t *testing.T) {
	srv := newServer(t, nil)
	hs := httpServer(t, srv)
	for name, q := range map[string]url.Values{
		"pipes": {"command": {"sh", "-c", "sleep 600 & echo $$ $!; wait"}, "stdout": {"true"}, "stdin": {"true"}},
		// An interactive shell puts each job in a process group of its own.
		"tty": {"command": {"sh", "-ic", "sleep 600 & echo $$ $!; wait"}, "stdout": {"true"}, "stdin": {"true"}, "tty": {"true"}},
	} {
		t.Run(name, func(t *testing.T) {
			c := wsDial(t, hs, "/api/v1/namespaces/default/pods/demo/exec?"+q.Encode())
			var out string
			for !strings.Contains(out, "\n") {
				_, msg, err := c.ReadMessage()
				if err != nil {
					t.Fatalf("read: %v (so far %q)", err, out)
				}
				if len(msg) > 0 && msg[0] == 1 {
					out += string(msg[1:])
				}
			}
			pids := readPIDs(t, out[strings.LastIndex(out[:len(out)-1], "\n")+1:])
			if len(pids) != 2 || !poll.Alive(pids[0]) || !poll.Alive(pids[1]) {
				t.Fatalf("pids %v from %q", pids, out)
			}
			if name == "tty" {
				if pg, _ := pgid(pids[1]); pg == pids[0] {
					t.Fatalf("the job is in the shell's group: the test would not cover job control")
				}
			}
			c.UnderlyingConn().Close() // no close frame
			took := poll.Gone(t, 2*time.Second, pids...)
			t.Logf("process tree gone %v after the disconnect", took)
		})
	}
}

func pgid(pid int) (int, error) { return syscall.Getpgid(pid) }

// Close kills what is running; the client sees the signal's exit code.
func TestCloseKillsProcesses(t *testing.T) {
	srv := newServer(t, nil)
	hs := httpServer(t, srv)
	ex, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: hs.URL}, "POST",
		mustURL(t, hs.URL+"/api/v1/namespaces/default/pods/demo/exec?command=sleep&command=600&stdout=true"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ex.StreamWithContext(testCtx(t), remotecommand.StreamOptions{Stdout: io.Discard}) }()
	var pids []int // the backend starts the process; nothing to wait on here
	_ = poll.Until(context.Background(), poll.Interval, 10*time.Second, func(context.Context) error {
		if pids = srv.PIDs(); len(pids) == 0 {
			return errors.New("no process yet")
		}
		return nil
	})
	if len(pids) != 1 {
		t.Fatalf("PIDs() = %v", pids)
	}
	srv.Close()
	err = <-done
	var ce utilexec.CodeExitError
	if !errors.As(err, &ce) || ce.Code != 128+9 {
		t.Fatalf("Stream: %v, want exit code 137", err)
	}
	poll.Gone(t, 2*time.Second, pids...)
	if p := srv.PIDs(); len(p) != 0 {
		t.Errorf("still tracked: %v", p)
	}
}

// A process that leaves its session keeps the output pipe open; the session
// still ends, DrainTimeout after its own process tree.
func TestDrainBoundsEscapedProcess(t *testing.T) {
	srv := newServer(t, func(c *Config) { c.DrainTimeout = 300 * time.Millisecond })
	hs := httpServer(t, srv)
	var out bytes.Buffer
	ex, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: hs.URL}, "POST", mustURL(t, hs.URL+"/api/v1/namespaces/default/pods/demo/exec?"+
		url.Values{"command": {"sh", "-c",
			// The escapee reports its pid on the session's stdout (fd 3),
			// which it keeps, and tells the main process, through head,
			// when it has left the session; then the main process exits.
			"exec 3>&1; setsid -f sh -c 'echo $$ >&3; echo ready; exec sleep 600' | head -n1 >/dev/null"}, "stdout": {"true"}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = ex.StreamWithContext(testCtx(t), remotecommand.StreamOptions{Stdout: &out})
	took := time.Since(start)
	pids := readPIDs(t, out.String())
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
	if err != nil || len(pids) != 1 {
		t.Fatalf("Stream: %v, output %q", err, out.String())
	}
	if took < 300*time.Millisecond || took > 10*time.Second {
		t.Errorf("session took %v with a 300ms drain bound", took)
	}
}

// Without a size from the client a tty starts at 80x24 (here without
// waiting for one).
func TestTTYDefaultSize(t *testing.T) {
	hs := httpServer(t, newServer(t, func(c *Config) { c.InitialSizeWait = -1 }))
	var out bytes.Buffer
	ex, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: hs.URL}, "POST",
		mustURL(t, hs.URL+"/api/v1/namespaces/default/pods/demo/exec?command=stty&command=size&stdout=true&tty=true"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.StreamWithContext(testCtx(t), remotecommand.StreamOptions{Stdout: &out, Tty: true}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "24 80\r\n" {
		t.Errorf("stty size %q", out.String())
	}
}

func TestAttachRunsEntrypoint(t *testing.T) {
	hs := httpServer(t, newServer(t, nil))
	var out bytes.Buffer
	ex, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: hs.URL}, "POST",
		mustURL(t, hs.URL+"/api/v1/namespaces/team/pods/two/attach?container=app&stdout=true"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.StreamWithContext(testCtx(t), remotecommand.StreamOptions{Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "attached\n" {
		t.Errorf("attach output %q", out.String())
	}
	// exec's working directory and environment come from the container.
	out.Reset()
	ex, err = remotecommand.NewSPDYExecutor(&rest.Config{Host: hs.URL}, "POST",
		mustURL(t, hs.URL+"/api/v1/namespaces/team/pods/two/exec?container=side&command=sh&command=-c&command=pwd%3Becho+$HOSTNAME%3Becho+${TERM:-none}&stdout=true"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.StreamWithContext(testCtx(t), remotecommand.StreamOptions{Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if out.String() != os.TempDir()+"\ntwo\nnone\n" {
		t.Errorf("exec output %q", out.String())
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// testPKI is a CA with a serving certificate for 127.0.0.1 and a client
// certificate, as a cluster issues for a kubelet and the API server.
type testPKI struct {
	caPEM, serverCert, serverKey, clientCert, clientKey []byte
	pool                                                *x509.CertPool
}

var (
	pkiOnce sync.Once
	pki     testPKI
)

func newPKI(t *testing.T) testPKI {
	pkiOnce.Do(func() {
		ca, err := testpki.NewCA("test-ca")
		if err != nil {
			t.Fatal(err)
		}
		pki.caPEM, pki.pool = ca.CertPEM, ca.Pool()
		if pki.serverCert, pki.serverKey, err = ca.Issue(testpki.CertSpec{CommonName: "node-a", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}); err != nil {
			t.Fatal(err)
		}
		if pki.clientCert, pki.clientKey, err = ca.Issue(testpki.CertSpec{CommonName: "kube-apiserver-kubelet-client", Client: true}); err != nil {
			t.Fatal(err)
		}
	})
	return pki
}

// The kubelet's shape over TLS with client certificates, as the API server
// reaches a kubelet: SPDY and WebSocket v4, exec and attach, with the pod
// UID in the path or not; no client certificate, no session.
func TestKubeletTLS(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	files := map[string][]byte{"ca.pem": p.caPEM, "cert.pem": p.serverCert, "key.pem": p.serverKey}
	for n, b := range files {
		if err := os.WriteFile(dir+"/"+n, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsCfg, err := LoadTLSConfig(dir+"/cert.pem", dir+"/key.pem", dir+"/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, nil)
	hs := httptest.NewUnstartedServer(srv)
	hs.TLS = tlsCfg
	hs.StartTLS()
	t.Cleanup(hs.Close)

	cfg := &rest.Config{Host: hs.URL, TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM, CertData: p.clientCert, KeyData: p.clientKey}}
	uid := string(podUID(srv.pods["default/demo"]))
	for _, path := range []string{
		"/exec/default/demo/shell?command=sh&command=-c&command=echo+hi%3B+exit+4&output=1&error=1",
		"/exec/default/demo/" + uid + "/shell?command=sh&command=-c&command=echo+hi%3B+exit+4&output=1&error=1",
	} {
		for _, transport := range []string{"spdy", "websocket"} {
			var ex remotecommand.Executor
			if transport == "spdy" {
				ex, err = remotecommand.NewSPDYExecutor(cfg, "POST", mustURL(t, hs.URL+path))
			} else {
				ex, err = remotecommand.NewWebSocketExecutorForProtocols(cfg, "GET", hs.URL+path, "v4.channel.k8s.io")
			}
			if err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			err = ex.StreamWithContext(testCtx(t), remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
			var ce utilexec.CodeExitError
			if !errors.As(err, &ce) || ce.Code != 4 || out.String() != "hi\n" {
				t.Errorf("%s %s: %v, %q", transport, path, err, out.String())
			}
		}
	}
	// Attach with a tty and stdin on the kubelet path.
	inR, inW := io.Pipe()
	defer inR.Close()
	ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", mustURL(t, hs.URL+"/attach/team/two/app?output=1&input=1&tty=1"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := ex.StreamWithContext(testCtx(t), remotecommand.StreamOptions{Stdin: inR, Stdout: &out, Tty: true}); err != nil || out.String() != "attached\r\n" {
		t.Errorf("attach: %v %q", err, out.String())
	}
	inW.Close()

	// No client certificate: the handshake fails, nothing runs.
	noCert := &rest.Config{Host: hs.URL, TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM}}
	ex, err = remotecommand.NewSPDYExecutor(noCert, "POST", mustURL(t, hs.URL+"/exec/default/demo/shell?command=true&output=1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.StreamWithContext(testCtx(t), remotecommand.StreamOptions{Stdout: io.Discard}); err == nil {
		t.Error("exec without a client certificate succeeded")
	}
	if _, err := LoadTLSConfig(dir+"/cert.pem", dir+"/key.pem", dir+"/key.pem"); err == nil {
		t.Error("a CA file without certificates was accepted")
	}
	if c := TLSConfig(tls.Certificate{}, nil); c.ClientAuth != tls.NoClientCert || c.NextProtos[0] != "http/1.1" {
		t.Errorf("TLSConfig without CAs: %+v", c)
	}
}

// A SPDY client that upgrades and never opens its streams leaves upstream's
// handler waiting for them until StreamCreationTimeout, whatever its
// connection does: Close must wait for that handler (goleak in the suites
// that embed a Server caught it outliving Close), and refuse new streams.
func TestCloseWaitsForStreamlessUpgrade(t *testing.T) {
	srv := newServer(t, func(c *Config) { c.StreamCreationTimeout = 2 * time.Second })
	hs := httpServer(t, srv)
	c, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.WriteString(c, "POST /api/v1/namespaces/default/pods/demo/exec?command=true&stdout=true HTTP/1.1\r\n"+
		"Host: backend\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	c.Close()
	const waiting = "remotecommand.(*v4ProtocolHandler).waitForStreams"
	poll.For(t, 5*time.Second, "a handler waiting for streams", func() bool { return strings.Contains(allStacks(), waiting) })

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if st := allStacks(); strings.Contains(st, waiting) {
		t.Fatalf("a stream handler outlived Close:\n%s", st)
	}
	// Closed: a new exec is refused with a Status, before any upgrade.
	r, err := http.Post(hs.URL+"/api/v1/namespaces/default/pods/demo/exec?command=true&stdout=true", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var st metav1.Status
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil || r.StatusCode != http.StatusServiceUnavailable || st.Reason != metav1.StatusReasonServiceUnavailable {
		t.Fatalf("exec after Close: %d %+v %v", r.StatusCode, st, err)
	}
}

func allStacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:goruntime.Stack(buf, true)])
}
