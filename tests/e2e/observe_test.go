package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// Issue 15 §2 through the binary: an observer connecting as guacd does
// (v4, the token in the pod segment) gets the scrollback, then live
// output; what it types never reaches the process; the owner reads the
// join notice; GET /sessions lists the observer; an observe token for an
// unknown sid is refused 404 before the upgrade; the observer ends with
// the session (1000) and the audit trail has both observer lines.
func TestObserverThroughBinary(t *testing.T) {
	e := startEnv(t, envOptions{extraArgs: []string{"--admin-listen", "127.0.0.1:0"}})
	c := e.claims("cat")
	c.Stdin, c.SID = true, "e2e-obs"
	q := url.Values{"container": {testContainer}, "command": c.Command, "stdin": {"true"}}
	path := "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?" + q.Encode()
	_, body, owner := e.tryUpgrade(t, upgradeRequest{path: path, header: bearer(e.mint(c)), protocols: []string{"v5.channel.k8s.io"}})
	if owner == nil {
		t.Fatalf("owner: %s", body)
	}
	defer owner.Close()
	owner.WriteMessage(websocket.BinaryMessage, []byte("\x00before\n"))
	testenv.ReadChannel(t, owner, 1, "before\n")

	oc := e.claims("cat")
	oc.SID, oc.Mode, oc.Subject = "e2e-unknown", hmac.ModeObserve, "watcher@example.com"
	guacdPath := func(tok string) string {
		return "/api/v1/namespaces/" + testNamespace + "/pods/" + tok + "/exec?" + url.Values{"container": {testContainer}, "command": c.Command}.Encode()
	}
	status, body, ws := e.tryUpgrade(t, upgradeRequest{path: guacdPath(e.mint(oc)), protocols: []string{"v4.channel.k8s.io"}})
	if ws != nil || status != http.StatusNotFound || !strings.Contains(body, `no live session \"e2e-unknown\"`) {
		t.Fatalf("unknown sid: %d %s", status, body)
	}

	oc = e.claims("cat")
	oc.SID, oc.Mode, oc.Subject = "e2e-obs", hmac.ModeObserve, "watcher@example.com"
	_, body, obs := e.tryUpgrade(t, upgradeRequest{path: guacdPath(e.mint(oc)), protocols: []string{"v4.channel.k8s.io"}})
	if obs == nil {
		t.Fatalf("observer: %s", body)
	}
	defer obs.Close()
	if got := testenv.ReadChannel(t, obs, 1, "before\n"); got != "before\n" {
		t.Fatalf("scrollback %q", got)
	}
	if got := testenv.ReadChannel(t, owner, 2, "observers now: 1"); !strings.Contains(got, "watcher@example.com is now watching this session") {
		t.Fatalf("owner notice %q", got)
	}
	obs.WriteMessage(websocket.BinaryMessage, []byte("\x00from the observer\n"))
	owner.WriteMessage(websocket.BinaryMessage, []byte("\x00after\n"))
	if got := testenv.ReadChannel(t, obs, 1, "after\n"); got != "after\n" {
		t.Fatalf("live %q", got)
	}

	code, body := e.adminDo(t, "GET", "/sessions", hmac.ScopeSessionsList)
	var list struct {
		Items []struct {
			SID       string `json:"sid"`
			Observers []struct {
				Sub string `json:"sub"`
			} `json:"observers"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil || len(list.Items) != 1 ||
		len(list.Items[0].Observers) != 1 || list.Items[0].Observers[0].Sub != "watcher@example.com" {
		t.Fatalf("GET /sessions: %d %s", code, body)
	}

	owner.WriteMessage(websocket.BinaryMessage, []byte{255, 0}) // v5: close stdin
	e.WaitLog(10*time.Second, "session closed", func(m map[string]any) bool { return m["sid"] == "e2e-obs" })
	out, _, err := testenv.ReadToClose(obs, websocket.CloseNormalClosure, 10*time.Second)
	if err != nil {
		t.Fatalf("observer: %v", err)
	}
	if bytes.Contains(out, []byte("from the observer")) {
		t.Fatalf("the observer's stdin reached cat: %q", out)
	}
	left := e.WaitLog(10*time.Second, "observer left", nil)
	if left["sid"] != "e2e-obs" || left["reason"] != "observed_session_ended" || left["ignored_stdin_bytes"] != float64(len("from the observer\n")) {
		t.Fatalf("observer left %v", left)
	}
	if joined := e.LogLines("observer joined"); len(joined) != 1 || joined[0]["sub"] != "watcher@example.com" {
		t.Fatalf("observer joined %v", joined)
	}
}
