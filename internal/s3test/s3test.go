// Package s3test runs a real S3-compatible object store on loopback for
// tests: SeaweedFS (master, volume server, filer and S3 gateway in one
// `weed server` process), built from the Go module proxy by internal/tools,
// with static credentials generated per run.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testnet"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// Server is a running SeaweedFS with its S3 gateway.
type Server struct {
	// Endpoint is host:port of the S3 gateway; URL is http://Endpoint.
	Endpoint, URL string
	// AccessKey and SecretKey are an admin identity's credentials.
	AccessKey, SecretKey string
	Dir                  string
	// Startup is how long the server took to serve S3 requests.
	Startup time.Duration

	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   sync.Mutex
	done chan struct{}
}

// New starts a server for one test and stops it in t.Cleanup.
func New(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	s, err := Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seaweedfs log tail:\n%s", s.LogTail(4000))
		}
		s.Stop()
	})
	return s
}

// Start builds (or reuses) weed and starts it, returning once the S3
// gateway answers an authenticated request.
func Start(ctx context.Context) (*Server, error) {
	bin, err := tools.SeaweedFS(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "s3test-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, AccessKey: "AK" + randHex(8), SecretKey: randHex(20), log: new(bytes.Buffer), done: make(chan struct{})}
	cfg := map[string]any{"identities": []any{map[string]any{
		"name":        "test",
		"credentials": []any{map[string]string{"accessKey": s.AccessKey, "secretKey": s.SecretKey}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"},
	}}}
	cfgJSON, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "s3.json"), cfgJSON, 0o600); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, err
	}
	ports, err := testnet.FreePorts(8)
	if err != nil {
		return nil, err
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	s.Endpoint = "127.0.0.1:" + p(6)
	s.URL = "http://" + s.Endpoint
	begin := time.Now()
	s.cmd = exec.Command(bin, "server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-dir="+filepath.Join(dir, "data"),
		"-master.port="+p(0), "-master.port.grpc="+p(1),
		"-volume.port="+p(2), "-volume.port.grpc="+p(3),
		"-filer", "-filer.port="+p(4), "-filer.port.grpc="+p(5),
		"-filer.localSocket="+filepath.Join(dir, "filer.sock"),
		"-s3", "-s3.port="+p(6), "-s3.port.grpc="+p(7),
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		"-s3.config="+filepath.Join(dir, "s3.json"),
		"-master.volumeSizeLimitMB=64", "-master.telemetry=false",
		"-volume.max=16",
	)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s, s
	// Its own process group, so Stop ends every child it may start.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()

	client, err := s.Client()
	if err != nil {
		s.Stop()
		return nil, err
	}
	readyCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := client.ListBuckets(readyCtx)
		if err == nil {
			break
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("seaweedfs exited: %v\n%s", err, s.LogTail(4000))
		case <-readyCtx.Done():
			s.Stop()
			return nil, fmt.Errorf("seaweedfs S3 not ready: %v\n%s", err, s.LogTail(4000))
		case <-tick.C:
		}
	}
	s.Startup = time.Since(begin)
	return s, nil
}

// Write collects the server's output.
func (s *Server) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.Write(p)
}

// LogTail returns the end of the server's output.
func (s *Server) LogTail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.log.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Client is a minio-go client with the admin credentials.
func (s *Server) Client() (*minio.Client, error) {
	return minio.New(s.Endpoint, &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), Region: "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
}

// MakeBucket creates a bucket, retrying while the filer settles.
func (s *Server) MakeBucket(ctx context.Context, name string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		err = c.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: "us-east-1"})
		if err == nil {
			return nil
		}
		var resp minio.ErrorResponse
		if errors.As(err, &resp) && (resp.Code == "BucketAlreadyOwnedByYou" || resp.Code == "BucketAlreadyExists") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("make bucket %s: %w", name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WriteCredentials writes the access and secret key files, as a mounted
// Secret would hold them, and returns their paths.
func (s *Server) WriteCredentials(dir string) (access, secret string, err error) {
	access, secret = filepath.Join(dir, "access-key"), filepath.Join(dir, "secret-key")
	if err = os.WriteFile(access, []byte(s.AccessKey+"\n"), 0o600); err == nil {
		err = os.WriteFile(secret, []byte(s.SecretKey+"\n"), 0o600)
	}
	return access, secret, err
}

// Stop terminates the server and removes its data.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	}
	_ = os.RemoveAll(s.Dir)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
