package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// klog starts its flush daemon in init; it lives for the process.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

// listening waits for the "listening" line and returns its address.
func listening(t *testing.T, l *testenv.WatchBuffer, done <-chan int) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		ch := l.Changes()
		text := l.String()
		sc := bufio.NewScanner(strings.NewReader(text))
		for sc.Scan() {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				return rec.Addr
			}
		}
		select {
		case <-ch:
		case code := <-done:
			t.Fatalf("exited with %d before listening: %s", code, text)
		case <-timeout:
			t.Fatalf("no listening line: %s", text)
		}
	}
}

func TestServe(t *testing.T) {
	pods := filepath.Join(t.TempDir(), "pods.json")
	if err := os.WriteFile(pods, []byte(`[{"namespace":"default","name":"demo","nodeName":"n1",
		"containers":[{"name":"shell","env":["WHO=backend"]}]}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &testenv.WatchBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--pods", pods}, logs) }()
	addr := listening(t, logs, done)

	resp, err := http.Get("http://" + addr + "/api/v1/namespaces/default/pods/demo")
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	err = json.NewDecoder(resp.Body).Decode(&pod)
	resp.Body.Close()
	if err != nil || pod.Spec.NodeName != "n1" || pod.Spec.Containers[0].Name != "shell" {
		t.Fatalf("pod %+v, %v", pod, err)
	}

	u, _ := url.Parse("http://" + addr + "/api/v1/namespaces/default/pods/demo/exec?command=sh&command=-c&command=echo+$WHO&stdout=true")
	ex, err := remotecommand.NewSPDYExecutor(&rest.Config{Host: "http://" + addr}, "POST", u)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	if err := ex.StreamWithContext(sctx, remotecommand.StreamOptions{Stdout: &out}); err != nil || out.String() != "backend\n" {
		t.Fatalf("exec: %q, %v", out.String(), err)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %q", line)
		}
	}
}

func TestRefusals(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--nope"}, 2, "flag provided but not defined"},
		{[]string{"extra"}, 2, "unexpected arguments"},
		{[]string{"--pods", "bad"}, 1, "invalid --pods"},
		{[]string{"--listen", "0.0.0.0:0"}, 1, "not a loopback address"},
		{[]string{"--listen", "192.0.2.1:0"}, 1, "not a loopback address"},
		{[]string{"--listen", "127.0.0.1:0", "--tls-cert-file", "/nonexistent.pem"}, 1, "TLS configuration"},
		{[]string{"--listen", "127.0.0.1:0", "--client-ca-file", "/nonexistent.pem"}, 1, "TLS configuration"},
	} {
		var logs bytes.Buffer
		if code := run(context.Background(), c.args, &logs); code != c.code || !strings.Contains(logs.String(), c.msg) {
			t.Errorf("%q: exit %d, log %q; want %d and %q", c.args, code, logs.String(), c.code, c.msg)
		}
	}
	if err := checkExposure("[::1]:1", false); err != nil {
		t.Error(err)
	}
	if err := checkExposure("localhost:1", false); err != nil {
		t.Error(err)
	}
	if err := checkExposure("0.0.0.0:1", true); err != nil {
		t.Error(err)
	}
	if err := checkExposure(":1", false); err == nil {
		t.Error("all interfaces accepted without client certificates")
	}
}
