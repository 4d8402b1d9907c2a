package release

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeapi"
)

// imageRuntime is the Job pods' container runtime for the install test: it
// pulls the pod's image by its exact reference from the loopback registry,
// takes this host's platform out of the index, and runs that image's
// /k8s-ws-proxy with the container's args as the pod's ServiceAccount. So
// the hook that runs is the released image's binary, found through the
// digest the chart pins, not a binary built beside the test.
type imageRuntime struct {
	mu   sync.Mutex
	bins map[string]string // image ref -> extracted binary
	dir  string
	runs []jobRun
}

// jobRun is one Job pod the runtime ran.
type jobRun struct {
	namespace, pod, image string
	exitCode              int
	output                string
}

func (r *imageRuntime) binary(ref string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.bins[ref]; ok {
		return p, nil
	}
	pr, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	idx, err := remote.Index(pr)
	if err != nil {
		return "", fmt.Errorf("pulling %s: %w", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return "", err
	}
	for _, d := range im.Manifests {
		if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != runtime.GOARCH {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return "", err
		}
		facts, errs := checkImage(img, *d.Platform)
		if len(errs) > 0 {
			return "", fmt.Errorf("%s %s: %v", ref, d.Platform, errors.Join(errs...))
		}
		p := filepath.Join(r.dir, fmt.Sprintf("k8s-ws-proxy-%d", len(r.bins)))
		if err := os.WriteFile(p, facts.Binary, 0o755); err != nil {
			return "", err
		}
		r.bins[ref] = p
		return p, nil
	}
	return "", fmt.Errorf("%s has no linux/%s image", ref, runtime.GOARCH)
}

func (r *imageRuntime) run(ctx context.Context, s *kubeapi.Server, pod *corev1.Pod) int {
	c := pod.Spec.Containers[0]
	code, out := r.runContainer(ctx, s, pod, c)
	r.mu.Lock()
	r.runs = append(r.runs, jobRun{namespace: pod.Namespace, pod: pod.Name, image: c.Image, exitCode: code, output: out})
	r.mu.Unlock()
	return code
}

func (r *imageRuntime) runContainer(ctx context.Context, s *kubeapi.Server, pod *corev1.Pod, c corev1.Container) (int, string) {
	if len(pod.Spec.Containers) != 1 || len(c.Command) != 0 {
		return 127, "want one container running the image's entrypoint"
	}
	bin, err := r.binary(c.Image)
	if err != nil {
		return 127, err.Error()
	}
	cfg, err := s.ServiceAccountConfig(ctx, pod.Namespace, pod.Spec.ServiceAccountName)
	if err != nil {
		return 1, err.Error()
	}
	kubeconfig := filepath.Join(r.dir, pod.Namespace+"-"+pod.Name+".kubeconfig")
	if err := s.WriteKubeconfig(kubeconfig, cfg); err != nil {
		return 1, err.Error()
	}
	// The downward API's namespace and literal values, as the kubelet
	// would set them.
	env := []string{"HOME=" + r.dir}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+pod.Namespace)
		}
	}
	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(runCtx, bin, append(append([]string(nil), c.Args...), "--kubeconfig", kubeconfig)...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil { // it did not start
		return 1, err.Error()
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// TestHelmInstallFromOCIOnControlPlane installs the chart straight from the
// loopback registry (oci://, the artifact release.yml pushes) on a control
// plane that runs hooks (kube-apiserver, controller-manager, scheduler,
// KWOK nodes), with nothing but enabled=true: the release is deployed, the
// pre-install hook Job ran the digest-pinned image and created the HMAC
// Secret, and the DaemonSet runs exactly that image by digest.
func TestHelmInstallFromOCIOnControlPlane(t *testing.T) {
	img := pushedImage(t)
	c := pushedChart(t)
	pinned := img.Repo + ":" + testTag + "@" + img.Digest

	rt := &imageRuntime{bins: map[string]string{}, dir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	begin := time.Now()
	cp, err := kubeapi.Start(ctx, kubeapi.Options{ControlPlane: true, FakeNodes: 2, JobRunner: rt.run})
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	t.Logf("control plane ready in %v", time.Since(begin).Round(time.Millisecond))
	kubeconfig := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig, cp.AdminConfig()); err != nil {
		t.Fatal(err)
	}
	env := append([]string{"KUBECONFIG=" + kubeconfig}, c.env...)
	const ns, release = "guacamole", "k8s-ws-proxy"

	begin = time.Now()
	run(t, t.TempDir(), env, c.helm, "install", release, c.ref, "--version", c.version, "--plain-http",
		"-n", ns, "--create-namespace", "--set", "enabled=true", "--wait", "--timeout", "5m")
	t.Logf("helm install from %s: %v", c.ref, time.Since(begin).Round(time.Millisecond))

	var list []struct {
		Name, Namespace, Revision, Status, Chart string
		AppVersion                               string `json:"app_version"`
	}
	out := run(t, t.TempDir(), env, c.helm, "list", "-n", ns, "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("helm list: %v\n%s", err, out)
	}
	if len(list) != 1 || list[0].Name != release || list[0].Status != "deployed" || list[0].Revision != "1" ||
		list[0].Chart != "k8s-ws-proxy-"+c.version || list[0].AppVersion != testTag {
		t.Errorf("helm list %+v; want %s deployed at revision 1, chart k8s-ws-proxy-%s, app %s", list, release, c.version, testTag)
	}

	rt.mu.Lock()
	runs := append([]jobRun(nil), rt.runs...)
	rt.mu.Unlock()
	if len(runs) != 1 || runs[0].namespace != ns || runs[0].image != pinned || runs[0].exitCode != 0 ||
		!strings.Contains(runs[0].output, `"msg":"created"`) {
		t.Fatalf("hook runs %+v; want one run of %s in %s that created the Secret", runs, pinned, ns)
	}
	cs := cp.AdminClient()
	job, err := cs.BatchV1().Jobs(ns).Get(ctx, "k8s-ws-proxy-bootstrap", metav1.GetOptions{})
	if err != nil || job.Status.Succeeded != 1 || job.Spec.Template.Spec.Containers[0].Image != pinned {
		t.Errorf("hook Job: %v, succeeded %d; want a succeeded Job of %s", err, job.Status.Succeeded, pinned)
	}
	secret, err := cs.CoreV1().Secrets(ns).Get(ctx, "k8s-ws-proxy-hmac", metav1.GetOptions{})
	if err != nil || len(secret.Data["key"]) != 32 {
		t.Errorf("HMAC Secret: %v (key %d bytes, want 32)", err, len(secret.Data["key"]))
	}
	ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, "k8s-ws-proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ds.Spec.Template.Spec.Containers[0].Image; got != pinned {
		t.Errorf("DaemonSet image %s, want %s", got, pinned)
	}
	if ds.Status.DesiredNumberScheduled != int32(len(cp.FakeNodes)) || ds.Status.NumberReady != ds.Status.DesiredNumberScheduled {
		t.Errorf("DaemonSet desired %d, ready %d; want a ready pod on each of the %d nodes",
			ds.Status.DesiredNumberScheduled, ds.Status.NumberReady, len(cp.FakeNodes))
	}
}
