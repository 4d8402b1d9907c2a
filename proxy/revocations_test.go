package proxy

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
)

func TestParseRevocations(t *testing.T) {
	t.Parallel()
	pasted := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
	rv, err := ParseRevocations([]byte("# revoked\n\nsub:alice\r\n  jti: j-1  \nsub:a:b\n" + pasted + "\nsub:\nuser:bob\n\xff\n" + strings.Repeat("x", 2000) + "\n"))
	if !rv.Subjects["alice"] || !rv.Subjects["a:b"] || !rv.TokenIDs["j-1"] || len(rv.Subjects) != 2 || len(rv.TokenIDs) != 1 {
		t.Fatalf("parsed %+v", rv)
	}
	if err == nil {
		t.Fatal("junk lines not reported")
	}
	msg := err.Error()
	for _, want := range []string{"5 lines ignored", "line 6: not sub:", "line 7: sub: without a value", "line 8: not sub:", "line 9: not UTF-8", "line 10: longer than 1024"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "eyJ") || strings.Contains(msg, "bob") {
		t.Errorf("error %q echoes a line", msg)
	}
	if rv, err := ParseRevocations([]byte("sub:x\n# only\n")); err != nil || !rv.Subjects["x"] {
		t.Fatalf("clean file: %+v %v", rv, err)
	}
}

func FuzzParseRevocations(f *testing.F) {
	for _, s := range []string{"", "sub:alice\njti:j\n", "# c\n\nsub:\n", "\xff\n", "sub:a:b\r\n", "jti:   \n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rv, _ := ParseRevocations(data)
		for _, m := range []map[string]bool{rv.Subjects, rv.TokenIDs} {
			for k := range m {
				if k == "" || k != strings.TrimSpace(k) || len(k) > maxRevocationLine || strings.Contains(k, "\n") {
					t.Fatalf("entry %q", k)
				}
			}
		}
		if again, _ := ParseRevocations(data); again.fingerprint() != rv.fingerprint() {
			t.Fatal("not deterministic")
		}
	})
}

// refusedDial makes an upgrade that must be refused and returns its status.
func (h *harness) refusedDial(c hmac.Claims) (int, metav1.Status) {
	h.t.Helper()
	now := time.Now()
	c.IssuedAt, c.ExpiresAt = jwt.NewNumericDate(now), jwt.NewNumericDate(now.Add(time.Minute))
	c.Namespace, c.Pod, c.Container, c.Stdin = "ns", "pod", "c", true
	if c.Command == nil {
		c.Command = []string{"cat"}
	}
	tok, err := h.signer.Sign(c)
	if err != nil {
		h.t.Fatal(err)
	}
	d := websocket.Dialer{Subprotocols: []string{ProtocolV5}}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(h.url, "http")+"/api/v1/namespaces/ns/pods/pod/exec",
		http.Header{"Authorization": {"Bearer " + tok}})
	if err == nil {
		ws.Close()
		h.t.Fatal("upgraded")
	}
	if resp == nil {
		h.t.Fatalf("dial: %v", err)
	}
	defer resp.Body.Close()
	var st metav1.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		h.t.Fatalf("status body: %v", err)
	}
	return resp.StatusCode, st
}

// A revocations file swapped as the kubelet swaps a ConfigMap ends the
// live sessions it names, refuses them from then on, reports its junk
// lines, and leaves every other session alone.
func TestRevocationsFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	dir := filepath.Join(t.TempDir(), "revocations")
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"revocations": []byte("# none yet\n")})
	f, err := h.srv.WatchRevocations(filepath.Join(dir, "revocations"), h.srv.log)
	if err != nil {
		t.Fatal(err)
	}
	filewatchtest.Start(t, f.Run, f.Started())

	alice := h.dialClaims(ProtocolV5, withSubject("alice", "a-1", false), "cat")
	bob := h.dialClaims(ProtocolV5, func(c *hmac.Claims) { c.Subject, c.SID, c.ID = "bob", "b-1", "bob-token-1" }, "cat")
	carol := h.dialClaims(ProtocolV5, withSubject("carol", "c-1", false), "cat")
	echo(t, alice, "a\n")
	echo(t, bob, "b\n") // up before it is revoked (see TestAdminListAndRevokeBySubject)
	ended := []<-chan ending{readAsync(alice, 20*time.Second), readAsync(bob, 20*time.Second)}

	filewatchtest.SwapSecretDir(t, dir, map[string][]byte{"revocations": []byte("sub:alice\nthis is junk\njti:bob-token-1\n")})
	for _, ch := range ended {
		e := <-ch
		if e.code != websocket.ClosePolicyViolation || !strings.Contains(e.status, `"reason":"Revoked"`) {
			t.Fatalf("revoked session ended with %d, status %q", e.code, e.status)
		}
	}
	problem := h.log.wait(t, 5*time.Second, "revocations file problem")
	if msg, _ := problem["error"].(string); !strings.Contains(msg, "line 2: not sub:") || strings.Contains(msg, "junk") {
		t.Fatalf("problem line %v", problem)
	}
	echo(t, carol, "still here\n")

	if code, st := h.refusedDial(hmac.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "alice"}}); code != 403 || st.Code != 403 || !strings.Contains(st.Message, "revoked") {
		t.Fatalf("revoked subject: %d %+v", code, st)
	}
	if rec := h.log.wait(t, 5*time.Second, "session rejected"); rec["reason"] != "revoked" {
		t.Fatalf("rejected line %v", rec)
	}
	// The file is the whole list: emptying it lifts the revocation.
	filewatchtest.SwapSecretDir(t, dir, map[string][]byte{"revocations": []byte("")})
	timeout := time.After(10 * time.Second)
	for {
		changed := f.r.Changed()
		if !h.srv.revocations.Load().Subjects["alice"] {
			break
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatal("emptied file still revokes alice")
		}
	}
	echo(t, h.dialClaims(ProtocolV5, withSubject("alice", "a-2", false), "cat"), "back\n")
}

func TestRevocationsFileMissingAtStart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if _, err := h.srv.WatchRevocations(filepath.Join(t.TempDir(), "absent"), h.srv.log); err == nil {
		t.Fatal("a missing revocations file was accepted at start")
	}
}
