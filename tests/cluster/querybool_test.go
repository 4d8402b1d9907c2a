package cluster

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// TestQueryBooleansAsAPIServer: the same exec query, sent to the real API
// server and to the proxy, means the same tty: the proxy reads tty= as the
// API server converts PodExecOptions (proxy/server_test.go holds the full
// table; this checks it against the real thing).
func TestQueryBooleansAsAPIServer(t *testing.T) {
	workload(t)
	p := startProxy(t, proxyOptions{})
	script := `if [ -t 1 ]; then echo IS-TTY; else echo NOT-TTY; fi`
	for _, tc := range []struct {
		value string
		want  bool
	}{{"yes", true}, {"", true}, {"on", true}, {"FALSE", false}, {"0", false}} {
		q := url.Values{"container": {workloadContainer}, "command": {"sh", "-c", script}, "stdout": {"true"}, "tty": {tc.value}}
		path := "/api/v1/namespaces/" + workloadNamespace + "/pods/" + workloadPod + "/exec?" + q.Encode()

		// The API server's reading, seen in what the container got.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		ex, err := remotecommand.NewWebSocketExecutor(api.AdminConfig(), "GET", api.URL+path)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out})
		cancel()
		if err != nil {
			t.Fatalf("tty=%q through the API server: %v", tc.value, err)
		}
		apiTTY := strings.Contains(out.String(), "IS-TTY")
		if !apiTTY && !strings.Contains(out.String(), "NOT-TTY") {
			t.Fatalf("tty=%q: output %q", tc.value, out.String())
		}
		if apiTTY != tc.want {
			t.Errorf("the API server reads tty=%q as %v, the table says %v", tc.value, apiTTY, tc.want)
		}

		// The proxy: a token granting what the API server read is
		// accepted, the other is refused.
		for _, grant := range []bool{apiTTY, !apiTTY} {
			c := p.claims(grant, "sh", "-c", script)
			c.Stdin = false
			d := websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io"}, HandshakeTimeout: 30 * time.Second}
			ws, resp, err := d.Dial("ws://"+p.Addr+path, http.Header{"Authorization": {"Bearer " + testenv.Mint(t, p.signer, c)}})
			if ws != nil {
				ws.SetReadDeadline(time.Now().Add(time.Minute))
				for {
					if _, _, err := ws.ReadMessage(); err != nil {
						break
					}
				}
				ws.Close()
			}
			accepted := err == nil
			if accepted != (grant == apiTTY) {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Errorf("tty=%q (the API server: %v), token tty=%v: proxy accepted=%v (status %d)", tc.value, apiTTY, grant, accepted, status)
			}
		}
	}
}
