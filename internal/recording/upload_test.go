package recording

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/goleak"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/s3test"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testlog"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testnet"
)

func TestMain(m *testing.M) {
	if os.Getenv("RECORDING_UPLOAD_CHILD") != "" {
		uploadChild()
		return
	}
	code := m.Run()
	if store != nil {
		store.Stop()
	}
	if code == 0 {
		// Idle keep-alive connections of the S3 clients' transports
		// end with the server; the rest must be gone.
		if err := goleak.Find(goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	storeOnce sync.Once
	store     *s3test.Server
	storeErr  error
)

// sharedStore starts one SeaweedFS for the package's upload tests.
func sharedStore(t *testing.T) *s3test.Server {
	t.Helper()
	storeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
		defer cancel()
		begin := time.Now()
		store, storeErr = s3test.Start(ctx)
		if storeErr == nil {
			fmt.Fprintf(os.Stderr, "seaweedfs ready in %s (S3 startup %s)\n", time.Since(begin).Round(time.Millisecond), store.Startup.Round(time.Millisecond))
		}
	})
	if storeErr != nil {
		t.Fatal(storeErr)
	}
	return store
}

func randomFile(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

func getObject(t *testing.T, s *s3test.Server, bucket, key string) ([]byte, error) {
	t.Helper()
	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer o.Close()
	return io.ReadAll(o)
}

func newTestUploader(t *testing.T, s *s3test.Server, url string, mod func(*UploaderConfig)) *Uploader {
	t.Helper()
	ak, sk, err := s.WriteCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := UploaderConfig{URL: url, AccessKeyFile: ak, SecretKeyFile: sk, PartSize: 5 << 20,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&cfg)
	}
	u, err := NewUploader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Finished recordings reach the store, a large one as a multipart upload,
// and leave the spool only once confirmed.
// shipSpool starts a recorder on spool as the proxy does at start, and
// returns once the uploads it queued have ended.
func shipSpool(t *testing.T, mode Mode, spool string, u *Uploader) {
	t.Helper()
	r, err := New(Config{Mode: mode, Dir: spool, Uploader: u})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	u.Wait()
	cancel()
	r.Wait()
}

func TestUploadToSeaweedFS(t *testing.T) {
	s := sharedStore(t)
	if err := s.MakeBucket(t.Context(), "casts"); err != nil {
		t.Fatal(err)
	}
	spool := t.TempDir()
	small := randomFile(t, filepath.Join(spool, "small.cast"), 1234)
	large := randomFile(t, filepath.Join(spool, "large.cast"), 12<<20+17) // three 5 MiB parts
	var stored atomic.Int32
	var logs testlog.Buffer
	u := newTestUploader(t, s, s.URL+"/casts/node-a", func(c *UploaderConfig) {
		c.Stored = func(string, string, int64) { stored.Add(1) }
		c.Logger = logs.Logger()
	})
	shipSpool(t, BestEffort, spool, u)
	for name, want := range map[string][]byte{"small.cast": small, "large.cast": large} {
		got, err := getObject(t, s, "casts", "node-a/"+name)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("object %s: %d bytes, err %v; want %d bytes", name, len(got), err, len(want))
		}
		if _, err := os.Stat(filepath.Join(spool, name)); !os.IsNotExist(err) {
			t.Errorf("%s still in the spool: %v", name, err)
		}
	}
	if stored.Load() != 2 {
		t.Errorf("Stored called %d times", stored.Load())
	}
	// Each confirmed object gets one recording_stored line, as
	// docs/audit.md documents it.
	lines := map[string]map[string]any{}
	for l := range strings.SplitSeq(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "recording stored" {
			if err := testlog.CheckAuditLine(m, "recording_stored"); err != nil {
				t.Error(err)
			}
			f, _ := m["file"].(string)
			lines[f] = m
		}
	}
	for name, size := range map[string]int{"small.cast": len(small), "large.cast": len(large)} {
		m := lines[name]
		if m == nil || m["bucket"] != "casts" || m["key"] != "node-a/"+name || m["bytes"] != float64(size) {
			t.Errorf("recording_stored for %s: %v", name, m)
		}
	}
	if len(lines) != 2 {
		t.Errorf("%d recording_stored lines, want 2", len(lines))
	}
}

// A refused upload stays in the spool and is retried; the credential files
// are read again, so fixing them (a rotated Secret) is enough.
func TestUploadRetriesAndRereadsCredentials(t *testing.T) {
	s := sharedStore(t)
	if err := s.MakeBucket(t.Context(), "casts"); err != nil {
		t.Fatal(err)
	}
	spool, creds := t.TempDir(), t.TempDir()
	want := randomFile(t, filepath.Join(spool, "retry.cast"), 4096)
	ak, sk := filepath.Join(creds, "ak"), filepath.Join(creds, "sk")
	os.WriteFile(ak, []byte(s.AccessKey), 0o600)
	os.WriteFile(sk, []byte("wrong"), 0o600)
	failed := make(chan int, 100)
	u := newTestUploader(t, s, s.URL+"/casts", func(c *UploaderConfig) {
		c.AccessKeyFile, c.SecretKeyFile = ak, sk
		c.Failed = func(_ string, n int, _ error) { failed <- n }
	})
	u.Enqueue(filepath.Join(spool, "retry.cast"))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); u.Run(ctx) }()
	for n := 0; n < 2; {
		select {
		case n = <-failed:
		case <-time.After(time.Minute):
			t.Fatal("no failed attempts reported")
		}
	}
	if _, err := os.Stat(filepath.Join(spool, "retry.cast")); err != nil {
		t.Fatalf("refused recording left the spool: %v", err)
	}
	os.WriteFile(sk, []byte(s.SecretKey), 0o600)
	u.Wait()
	cancel()
	<-done
	if got, err := getObject(t, s, "casts", "retry.cast"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("object after retry: %d bytes, %v", len(got), err)
	}
}

// uploadChild is the process the kill test kills: it runs the recorder's
// start-up path (queue the spool, upload) as the proxy does.
func uploadChild() {
	u, err := NewUploader(UploaderConfig{URL: os.Getenv("UPLOAD_URL"), AccessKeyFile: os.Getenv("UPLOAD_AK"),
		SecretKeyFile: os.Getenv("UPLOAD_SK"), PartSize: 5 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	r, err := New(Config{Mode: Required, Dir: os.Getenv("UPLOAD_SPOOL"), Uploader: u})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	_ = r.Start(context.Background())
	u.Wait()
	os.Exit(0)
}

// Nothing is lost when the uploading process dies mid-upload: the file
// stays in the spool, and the next start uploads the whole object.
func TestUploadKilledMidUploadCompletesAfterRestart(t *testing.T) {
	s := sharedStore(t)
	// A bucket of its own each run: with -count the store outlives a run,
	// and the object of the run before would pass for a killed upload's.
	bucket := fmt.Sprintf("crash-%d", time.Now().UnixNano())
	if err := s.MakeBucket(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	spool := t.TempDir()
	want := randomFile(t, filepath.Join(spool, "big.cast"), 16<<20+5)
	ak, sk, _ := s.WriteCredentials(t.TempDir())
	rl := testnet.NewRelay(t, s.Endpoint, testnet.Options{Rate: 4 << 20}) // 16 MiB takes about 4 s

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "RECORDING_UPLOAD_CHILD=1", "UPLOAD_URL=http://"+rl.Addr()+"/"+bucket,
		"UPLOAD_AK="+ak, "UPLOAD_SK="+sk, "UPLOAD_SPOOL="+spool)
	var childErr bytes.Buffer
	child.Stderr = &childErr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	deadline := time.After(2 * time.Minute)
	for rl.Up() < 7<<20 { // past the first part, before the last
		select {
		case err := <-exited:
			t.Fatalf("uploader exited before the kill: %v\n%s", err, childErr.String())
		case <-deadline:
			t.Fatalf("upload did not progress: %d bytes", rl.Up())
		case <-time.After(20 * time.Millisecond):
		}
	}
	_ = child.Process.Signal(syscall.SIGKILL)
	<-exited
	t.Logf("killed the uploader after %d bytes had gone upstream", rl.Up())
	if got, err := getObject(t, s, bucket, "big.cast"); err == nil && len(got) > 0 {
		t.Fatalf("object exists (%d bytes) although the upload was killed", len(got))
	}
	if _, err := os.Stat(filepath.Join(spool, "big.cast")); err != nil {
		t.Fatalf("killed upload removed the spool file: %v", err)
	}

	// The next start, straight to the store.
	u := newTestUploader(t, s, s.URL+"/"+bucket, nil)
	shipSpool(t, Required, spool, u)
	got, err := getObject(t, s, bucket, "big.cast")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after restart: %d bytes, %v; want %d", len(got), err, len(want))
	}
	if left, _ := filepath.Glob(filepath.Join(spool, "*")); len(left) != 0 {
		t.Fatalf("spool not empty: %v", left)
	}
}

func TestParseUploadURL(t *testing.T) {
	for _, tc := range []struct {
		in                       string
		endpoint, bucket, prefix string
		secure, ok               bool
	}{
		{"https://s3.example:8333/casts", "s3.example:8333", "casts", "", true, true},
		{"http://127.0.0.1:9000/casts/a/b/", "127.0.0.1:9000", "casts", "a/b/", false, true},
		{"s3://bucket", "", "", "", false, false},
		{"http://host/", "", "", "", false, false},
		{"http://user:pw@host/b", "", "", "", false, false},
		{"http://host/b/../..", "", "", "", false, false},
	} {
		e, sec, b, p, err := ParseUploadURL(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (e != tc.endpoint || b != tc.bucket || p != tc.prefix || sec != tc.secure)) {
			t.Errorf("ParseUploadURL(%q) = %q %v %q %q %v", tc.in, e, sec, b, p, err)
		}
	}
}
