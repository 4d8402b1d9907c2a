package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/s3test"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testnet"
)

func objectBytes(t *testing.T, c *minio.Client, bucket, key string) ([]byte, error) {
	t.Helper()
	o, err := c.GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer o.Close()
	return io.ReadAll(o)
}

// The proxy killed in the middle of uploading a recording loses nothing:
// after the restart the object is complete, and a session recorded by the
// restarted proxy is uploaded when it ends.
func TestRecordingUploadSurvivesProxyKill(t *testing.T) {
	store := s3test.New(t)
	if err := store.MakeBucket(t.Context(), "e2e"); err != nil {
		t.Fatal(err)
	}
	s3c, err := store.Client()
	if err != nil {
		t.Fatal(err)
	}
	ak, sk, err := store.WriteCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(t.TempDir(), "spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	// A recording left by an earlier crash, larger than a 16 MiB part.
	leftover := make([]byte, 20<<20+3)
	_, _ = rand.Read(leftover)
	if err := os.WriteFile(filepath.Join(spool, "crashed.cast"), leftover, 0o600); err != nil {
		t.Fatal(err)
	}
	relay := testnet.NewRelay(t, store.Endpoint, testnet.Options{Rate: 4 << 20})
	args := func(url string) []string {
		return []string{"--recording=required", "--recording-dir=" + spool, "--recording-upload-url=" + url + "/e2e/node-1",
			"--recording-upload-access-key-file=" + ak, "--recording-upload-secret-key-file=" + sk}
	}

	first := startEnv(t, envOptions{extraArgs: args("http://" + relay.Addr())})
	waitFor(t, 2*time.Minute, "upload under way past its first part", func() bool { return relay.Up() > 17<<20 })
	if err := first.Process().Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.Exited()
	t.Logf("killed the proxy after %d bytes had gone upstream", relay.Up())
	if got, err := objectBytes(t, s3c, "e2e", "node-1/crashed.cast"); err == nil && len(got) > 0 {
		t.Fatalf("object exists (%d bytes) although the upload was killed", len(got))
	}
	if _, err := os.Stat(filepath.Join(spool, "crashed.cast")); err != nil {
		t.Fatalf("the killed upload's file left the spool: %v", err)
	}

	second := startEnv(t, envOptions{extraArgs: args(store.URL)})
	c := second.claims("sh", "-c", "echo recorded")
	c.SID = "e2e-rec"
	c.Stdin = false
	cfg := &rest.Config{Host: "http://" + second.Addr, BearerToken: second.mint(c)}
	ex, err := remotecommand.NewWebSocketExecutor(cfg, "GET", testenv.ExecURL(second.Addr, c, false))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := ex.StreamWithContext(t.Context(), remotecommand.StreamOptions{Stdout: &out}); err != nil {
		t.Fatalf("session: %v", err)
	}
	waitFor(t, 2*time.Minute, "both recordings stored", func() bool { return len(second.LogLines("recording stored")) >= 2 })
	got, err := objectBytes(t, s3c, "e2e", "node-1/crashed.cast")
	if err != nil || !bytes.Equal(got, leftover) {
		t.Fatalf("leftover after restart: %d bytes, %v; want %d", len(got), err, len(leftover))
	}
	rec, err := objectBytes(t, s3c, "e2e", "node-1/e2e-rec.cast")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(rec, []byte(`"sid":"e2e-rec"`)) || !bytes.Contains(rec, []byte(`"o","recorded\n"]`)) ||
		!bytes.Contains(rec, []byte(`{\"event\":\"end\",\"exit_code\":0,\"reason\":\"exited\"}`)) {
		t.Fatalf("session recording:\n%s", rec)
	}
	if left, _ := filepath.Glob(filepath.Join(spool, "*")); len(left) != 0 {
		t.Fatalf("spool not empty: %v", left)
	}
}
