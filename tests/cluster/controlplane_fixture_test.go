package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeapi"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// The control plane that runs hooks: kube-apiserver with the ServiceAccount
// admission plugin on, kube-controller-manager (Job, DaemonSet, garbage
// collector, ServiceAccount controllers...), kube-scheduler and KWOK nodes.
// It is separate from the package's shared API server, whose tests create
// what controllers would themselves; this one is started on first use.
const fakeNodes = 3

var (
	cpOnce sync.Once
	cp     *kubeapi.Server
	cpErr  error

	// hookRuns records every Job pod the JobRunner ran, by namespace.
	hookRunsMu sync.Mutex
	hookRuns   = map[string][]hookRun{}
)

// hookRun is one run of a Job pod's container.
type hookRun struct {
	pod      string
	args     []string
	exitCode int
	output   string
}

func runsIn(ns string) []hookRun {
	hookRunsMu.Lock()
	defer hookRunsMu.Unlock()
	return append([]hookRun(nil), hookRuns[ns]...)
}

// controlPlane starts the control plane once per run; TestMain's teardown
// stops it.
func controlPlane(t testing.TB) *kubeapi.Server {
	t.Helper()
	cpOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
		defer cancel()
		begin := time.Now()
		cp, cpErr = kubeapi.Start(ctx, kubeapi.Options{ControlPlane: true, FakeNodes: fakeNodes, JobRunner: runJobPod})
		if cpErr != nil {
			return
		}
		fmt.Fprintf(os.Stderr, "control plane %s ready in %s (etcd %s, kube-apiserver %s, controller-manager+scheduler+KWOK+%d nodes %s)\n",
			cp.URL, time.Since(begin).Round(time.Millisecond), cp.EtcdStartup.Round(time.Millisecond),
			cp.APIServerStartup.Round(time.Millisecond), fakeNodes, cp.ControlPlaneStartup.Round(time.Millisecond))
		atTeardown(func() {
			if err := cp.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
			}
		})
	})
	if cpErr != nil {
		t.Fatalf("starting the control plane: %v", cpErr)
	}
	return cp
}

// runJobPod is the container runtime of Job pods: it runs the pod's
// container the way a kubelet would run the chart's image. The image is the
// proxy's, so its command is the proxy binary with the container's args;
// POD_NAMESPACE comes from the downward API, and the credentials are a token
// bound to this pod (what the kubelet projects into
// /var/run/secrets/kubernetes.io/serviceaccount), written as a kubeconfig.
func runJobPod(ctx context.Context, cp *kubeapi.Server, pod *corev1.Pod) int {
	record := func(code int, out string) int {
		hookRunsMu.Lock()
		defer hookRunsMu.Unlock()
		hookRuns[pod.Namespace] = append(hookRuns[pod.Namespace], hookRun{pod: pod.Name, args: pod.Spec.Containers[0].Args, exitCode: code, output: out})
		return code
	}
	if len(pod.Spec.Containers) != 1 || !strings.Contains(pod.Spec.Containers[0].Image, "k8s-ws-proxy") {
		return record(127, "not the proxy's image")
	}
	c := pod.Spec.Containers[0]
	secs := int64(600)
	tr, err := cp.AdminClient().CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: &secs,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return record(1, "token: "+err.Error())
	}
	dir, err := os.MkdirTemp("", "jobpod-")
	if err != nil {
		return record(1, err.Error())
	}
	defer os.RemoveAll(dir)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig, &rest.Config{Host: cp.URL, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: cp.CA.CertPEM}}); err != nil {
		return record(1, err.Error())
	}
	env := []string{"HOME=" + dir}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+pod.Namespace)
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		}
	}
	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(runCtx, proxyBin, append(append([]string(nil), c.Args...), "--kubeconfig", kubeconfig)...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var ee *osexec.ExitError
	switch {
	case err == nil:
		return record(0, out.String())
	case errors.As(err, &ee):
		return record(ee.ExitCode(), out.String())
	default:
		return record(1, err.Error())
	}
}

// helmCLI runs one pinned helm against the control plane, as an operator
// with cluster-admin would.
type helmCLI struct {
	version, bin, home, kubeconfig string
}

func newHelmCLI(t *testing.T, version string) helmCLI {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()
	bin, err := tools.Helm(ctx, version)
	if err != nil {
		t.Fatal(err)
	}
	h := helmCLI{version: version, bin: bin, home: t.TempDir()}
	h.kubeconfig = filepath.Join(h.home, "admin.kubeconfig")
	if err := cp.WriteKubeconfig(h.kubeconfig, cp.AdminConfig()); err != nil {
		t.Fatal(err)
	}
	return h
}

// run returns helm's combined output and its error.
func (h helmCLI) run(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := osexec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+h.home, "KUBECONFIG="+h.kubeconfig,
		"XDG_CACHE_HOME="+filepath.Join(h.home, "cache"), "XDG_CONFIG_HOME="+filepath.Join(h.home, "config"), "XDG_DATA_HOME="+filepath.Join(h.home, "data"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (h helmCLI) mustRun(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	out, err := h.run(t, timeout, args...)
	if err != nil {
		t.Fatalf("helm %s %s: %v\n%s", h.version, strings.Join(args, " "), err, out)
	}
	return out
}

// releaseStatus is the part of `helm status -o json` the tests read.
type releaseStatus struct {
	Version int `json:"version"`
	Info    struct {
		Status string `json:"status"`
	} `json:"info"`
}

func (h helmCLI) status(t *testing.T, release, ns string) releaseStatus {
	t.Helper()
	out := h.mustRun(t, time.Minute, "status", release, "-n", ns, "-o", "json")
	var st releaseStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("helm status: %v\n%s", err, out)
	}
	return st
}

// chartCopy copies the chart to a temporary directory and applies edit to
// each template's text, for variants (a version bump, the seed's weights).
func chartCopy(t *testing.T, edit func(rel string, data []byte) []byte) string {
	t.Helper()
	return testenv.CopyChart(t, filepath.Join(repoRoot(t), "chart"), func(rel string, data []byte) ([]byte, error) {
		return edit(rel, data), nil
	})
}
