// Package release tests the release path end to end, offline: the
// daemonless multi-arch image pushed to a real CNCF distribution registry on
// loopback, its SBOM attestation, its cosign signature, the chart as an OCI
// artifact, the Flux example and the CI workflows, all with the pinned tools
// from internal/tools.
package release

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// The tag the tests release; chart version 0.0.0-test.1 follows from it.
const (
	testTag  = "v0.0.0-test.1"
	testRepo = "k8s-ws-proxy/k8s-ws-proxy"
)

var cleanups []func()

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// toolCtx bounds a cold build of a pinned tool (cosign's is the longest).
func toolCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// run executes a command and returns its combined output, failing the test
// with that output on a non-zero exit.
func run(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(t, dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(t testing.TB, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// registry is a CNCF distribution registry serving on loopback.
type registry struct {
	Host   string // 127.0.0.1:PORT
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

// shared is a package-wide fixture built on first use; when building it
// failed, every test that asks fails with that error.
type shared[T any] struct {
	once sync.Once
	v    T
	err  error
}

func (s *shared[T]) get(t testing.TB, what string, build func() (T, error)) T {
	t.Helper()
	s.once.Do(func() { s.v, s.err = build() })
	if s.err != nil {
		t.Fatalf("%s: %v", what, s.err)
	}
	return s.v
}

// sharedDir is a temporary directory TestMain removes after the last test.
func sharedDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err == nil {
		cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	}
	return dir, err
}

var sharedRegistry shared[*registry]

// theRegistry starts the package's one registry on first use; TestMain stops
// it after the last test.
func theRegistry(t testing.TB) *registry {
	t.Helper()
	return sharedRegistry.get(t, "registry", func() (*registry, error) {
		bin, err := tools.Registry(toolCtx(t))
		if err != nil {
			return nil, err
		}
		dir, err := sharedDir("release-registry-")
		if err != nil {
			return nil, err
		}
		r, err := startRegistry(bin, dir)
		if err == nil {
			cleanups = append(cleanups, r.stop)
		}
		return r, err
	})
}

// startRegistry runs `registry serve` on a free loopback port. The port is
// picked by binding :0 and released for the registry; should another process
// take it in between, the registry exits and the next attempt picks anew.
func startRegistry(bin, dir string) (*registry, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		host := l.Addr().String()
		l.Close()
		cfg := filepath.Join(dir, fmt.Sprintf("config-%d.yml", attempt))
		conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), host)
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			return nil, err
		}
		logPath := filepath.Join(dir, fmt.Sprintf("registry-%d.log", attempt))
		logf, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "serve", cfg)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			return nil, err
		}
		exited := make(chan struct{})
		var waitErr error
		go func() { waitErr = cmd.Wait(); logf.Close(); close(exited) }()
		r := &registry{Host: host, cmd: cmd, log: logPath, exited: exited}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			select {
			case <-exited:
				return false, fmt.Errorf("registry exited: %v", waitErr)
			default:
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false, nil
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, nil
		})
		cancel()
		if err == nil {
			return r, nil
		}
		_ = cmd.Process.Kill()
		<-exited
		b, _ := os.ReadFile(logPath)
		lastErr = fmt.Errorf("registry on %s did not come up: %w\n%s", host, err, b)
	}
	return nil, lastErr
}

func (r *registry) stop() {
	_ = r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	http.DefaultClient.CloseIdleConnections()
}

var sharedReleaser shared[string]

// releaser builds internal/tools/releaser once per package.
func releaser(t testing.TB) string {
	t.Helper()
	return sharedReleaser.get(t, "releaser", func() (string, error) {
		dir, err := sharedDir("releaser-bin-")
		if err != nil {
			return "", err
		}
		bin := filepath.Join(dir, "releaser")
		cmd := exec.Command("go", "build", "-o", bin, "./internal/tools/releaser")
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building releaser: %w\n%s", err, out)
		}
		return bin, nil
	})
}

// pushed is the image the release tests share: built once by the releaser
// exactly as `make image PUSH=1` does and pushed to the loopback registry.
type pushed struct {
	Repo   string // 127.0.0.1:PORT/k8s-ws-proxy/k8s-ws-proxy
	Ref    string // Repo:testTag
	Digest string // sha256:...
}

var sharedPush shared[pushed]

func pushedImage(t testing.TB) pushed {
	t.Helper()
	reg := theRegistry(t)
	bin := releaser(t)
	return sharedPush.get(t, "pushed image", func() (pushed, error) {
		repo := reg.Host + "/" + testRepo
		digestFile := filepath.Join(os.TempDir(), fmt.Sprintf("release-digest-%d", os.Getpid()))
		defer os.Remove(digestFile)
		out, err := runErr(t, repoRoot(t), nil, bin, "image",
			"-version", testTag, "-commit", "c0ffee1",
			"-push", repo+":"+testTag, "-digest-file", digestFile)
		if err != nil {
			return pushed{}, fmt.Errorf("releaser image: %w\n%s", err, out)
		}
		d, err := os.ReadFile(digestFile)
		if err != nil {
			return pushed{}, err
		}
		p := pushed{Repo: repo, Ref: repo + ":" + testTag, Digest: strings.TrimSpace(string(d))}
		if !strings.Contains(out, p.Digest) {
			return pushed{}, fmt.Errorf("releaser output does not name the digest %s:\n%s", p.Digest, out)
		}
		return p, nil
	})
}
