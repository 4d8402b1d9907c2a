package kubeapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testnet"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// KWOKNodeAnnotation marks the Nodes the harness's KWOK controller plays the
// kubelet for, as upstream KWOK's own examples do.
const KWOKNodeAnnotation = "kwok.x-k8s.io/node"

// JobRunner stands in for a Job pod's container runtime: it runs the pod's
// (only) container however the test sees fit (typically the real binary with
// the container's args, as the pod's ServiceAccount) and returns its exit
// code. It is called once per pod, after KWOK has made the pod Running, with
// the Server the pod runs on.
type JobRunner func(ctx context.Context, s *Server, pod *corev1.Pod) int

// binaries are the control plane's programs, built concurrently where that
// pays: kube-controller-manager and kube-scheduler share most packages with
// kube-apiserver, so they follow it (the Go build cache then serves nearly
// all of their compilation); etcd and KWOK are other modules and build beside
// them.
type binaries struct {
	etcd, apiserver, controllerManager, scheduler, kwok string
}

func buildBinaries(ctx context.Context, controlPlane bool) (binaries, error) {
	var (
		b    binaries
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	run := func(steps ...func() error) {
		wg.Go(func() {
			for _, step := range steps {
				if err := step(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	set := func(dst *string, f func(context.Context) (string, error)) func() error {
		return func() (err error) { *dst, err = f(ctx); return err }
	}
	run(set(&b.etcd, tools.Etcd))
	k8s := []func() error{set(&b.apiserver, tools.KubeAPIServer)}
	if controlPlane {
		k8s = append(k8s, set(&b.controllerManager, tools.KubeControllerManager), set(&b.scheduler, tools.KubeScheduler))
		run(set(&b.kwok, tools.KWOK))
	}
	run(k8s...)
	wg.Wait()
	return b, errors.Join(errs...)
}

// startControlPlane starts kube-controller-manager, kube-scheduler and KWOK
// against the running API server, registers the fake nodes and waits until
// each component has shown it works: the ServiceAccount controller has made
// the default ServiceAccount (SA admission refuses pods until then), both
// components answer /healthz, and every fake node is Ready.
func (s *Server) startControlPlane(ctx context.Context, bins binaries, opts Options) error {
	begin := time.Now()
	f := func(name string) string { return filepath.Join(s.Dir, name) }
	// Identities as kubeadm gives them: the bootstrap RBAC policy binds
	// these user names to their components' roles. The controller manager
	// runs each controller as its own ServiceAccount, as in kubeadm.
	for _, c := range []struct{ file, cn string }{
		{"controller-manager.kubeconfig", "system:kube-controller-manager"},
		{"scheduler.kubeconfig", "system:kube-scheduler"},
	} {
		cfg, err := s.UserConfig(c.cn)
		if err != nil {
			return err
		}
		if err := s.WriteKubeconfig(f(c.file), cfg); err != nil {
			return err
		}
	}
	// KWOK writes node and pod status and node leases the way kubelets of
	// many nodes would; the Node authorizer would limit one identity to one
	// node, so it runs as the admin.
	if err := s.WriteKubeconfig(f("admin.kubeconfig"), s.AdminConfig()); err != nil {
		return err
	}

	var err error
	s.controllerManager, err = s.startComponent(ctx, "kube-controller-manager", bins.controllerManager, opts.ReadyTimeout, func(port int) []string {
		return append(componentArgs(f("controller-manager.kubeconfig"), f("kcm-cert-dir"), port),
			"--use-service-account-credentials=true",
			"--service-account-private-key-file="+f("service-account.key"),
			"--root-ca-file="+f("ca.crt"),
			"--cluster-name=kubeapi-harness",
		)
	})
	if err != nil {
		return err
	}
	s.scheduler, err = s.startComponent(ctx, "kube-scheduler", bins.scheduler, opts.ReadyTimeout, func(port int) []string {
		return componentArgs(f("scheduler.kubeconfig"), f("scheduler-cert-dir"), port)
	})
	if err != nil {
		return err
	}

	stages, err := tools.KWOKStages(ctx)
	if err != nil {
		return err
	}
	if err := os.WriteFile(f("kwok-stages.yaml"), stages, 0o644); err != nil {
		return err
	}
	s.kwok, err = startProcess("kwok", s.Dir, bins.kwok, []string{
		"--kubeconfig=" + f("admin.kubeconfig"),
		"--config=" + f("kwok-stages.yaml"),
		"--manage-nodes-with-annotation-selector=" + KWOKNodeAnnotation + "=fake",
		"--node-lease-duration-seconds=40",
		"--cidr=10.244.0.0/16",
		"--node-ip=127.0.0.1",
	})
	if err != nil {
		return err
	}

	readyCtx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()
	cs := s.AdminClient()
	for i := range opts.FakeNodes {
		name := fmt.Sprintf("kwok-node-%d", i)
		s.FakeNodes = append(s.FakeNodes, name)
		_, err := cs.CoreV1().Nodes().Create(readyCtx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{KWOKNodeAnnotation: "fake"},
			Labels:      map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok"},
		}}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating fake node %s: %w", name, err)
		}
	}
	err = wait.PollUntilContextCancel(readyCtx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if s.kwok.exited() {
			return false, fmt.Errorf("kwok exited: %v\n%s", s.kwok.waitErr, s.kwok.logTail(3000))
		}
		if _, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return false, nil
		}
		for _, name := range s.FakeNodes {
			n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil || !nodeReady(n) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("control plane not ready (default ServiceAccount, %d KWOK nodes): %w\nkube-controller-manager:\n%s\nkwok:\n%s",
			opts.FakeNodes, err, s.controllerManager.logTail(3000), s.kwok.logTail(3000))
	}
	if opts.JobRunner != nil {
		jctx, stop := context.WithCancel(context.Background())
		s.stopJobs = stop
		s.jobsDone = make(chan struct{})
		go func() {
			defer close(s.jobsDone)
			s.runJobs(jctx, opts.JobRunner)
		}()
	}
	s.ControlPlaneStartup = time.Since(begin)
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// componentArgs are the flags the controller manager and the scheduler
// share: one kubeconfig for everything, loopback only, no leader election.
func componentArgs(kubeconfig, certDir string, port int) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + certDir,
		"--leader-elect=false",
		"--profiling=false",
		"--v=1",
	}
}

// startComponent starts a component that serves /healthz on a secure port
// and waits for it, retrying with another port if the one picked was taken.
func (s *Server) startComponent(ctx context.Context, name, bin string, timeout time.Duration, args func(port int) []string) (*process, error) {
	client := &http.Client{
		Timeout: 5 * time.Second,
		// The component's serving certificate is self-signed per run in
		// its --cert-dir; /healthz is what is checked, not the TLS.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}, //nolint:gosec // loopback health probe of a throwaway server
	}
	defer client.CloseIdleConnections()
	for attempt := 1; ; attempt++ {
		ports, err := testnet.FreePorts(1)
		if err != nil {
			return nil, err
		}
		p, err := startProcess(name, s.Dir, bin, args(ports[0]))
		if err != nil {
			return nil, err
		}
		url := loopbackURL("https", ports[0]) + "/healthz"
		err = waitReady(ctx, p, timeout, func(ctx context.Context) error {
			return checkHealth(ctx, client, url, "ok")
		})
		if err == nil {
			return p, nil
		}
		if errors.Is(err, errExited) && p.portInUse() && attempt < startAttempts {
			continue
		}
		_ = p.stop(5 * time.Second)
		return nil, fmt.Errorf("%s: %w\n%s", name, err, p.logTail(6000))
	}
}

// runJobs plays the container runtime for Job pods on the fake nodes: once
// KWOK reports such a pod Running, run it with the JobRunner and write the
// terminal status a kubelet would (Succeeded or Failed, with the exit code).
func (s *Server) runJobs(ctx context.Context, run JobRunner) {
	cs := s.AdminClient()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		started = map[types.UID]bool{}
	)
	defer wg.Wait()
	consider := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok || pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil || !ownedByJob(pod) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if started[pod.UID] {
			return
		}
		started[pod.UID] = true
		pod = pod.DeepCopy()
		wg.Go(func() {
			code := run(ctx, s, pod)
			_ = completePod(ctx, cs, pod, code)
		})
	}
	// List, then watch from the list's resourceVersion; a closed or
	// expired watch starts over with a new list.
	for ctx.Err() == nil {
		list, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		for i := range list.Items {
			consider(&list.Items[i])
		}
		w, err := cs.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true})
		if err != nil {
			continue
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				break
			}
			consider(ev.Object)
		}
		w.Stop()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func ownedByJob(p *corev1.Pod) bool {
	for _, o := range p.OwnerReferences {
		if o.Kind == "Job" && o.Controller != nil && *o.Controller {
			return true
		}
	}
	return false
}

// completePod writes what a kubelet writes when the pod's containers have
// exited: terminated container states and the pod phase.
func completePod(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, code int) error {
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		cur, err := cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, nil
		}
		now := metav1.Now()
		phase, reason := corev1.PodSucceeded, "Completed"
		if code != 0 {
			phase, reason = corev1.PodFailed, "Error"
		}
		cur.Status.Phase = phase
		var statuses []corev1.ContainerStatus
		for _, c := range cur.Spec.Containers {
			statuses = append(statuses, corev1.ContainerStatus{
				Name: c.Name, Image: c.Image,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: int32(code), Reason: reason, StartedAt: now, FinishedAt: now,
				}},
			})
		}
		cur.Status.ContainerStatuses = statuses
		for i := range cur.Status.Conditions {
			switch cur.Status.Conditions[i].Type {
			case corev1.PodReady, corev1.ContainersReady:
				cur.Status.Conditions[i].Status = corev1.ConditionFalse
				cur.Status.Conditions[i].Reason = "PodCompleted"
				cur.Status.Conditions[i].LastTransitionTime = now
			}
		}
		_, err = cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err == nil, nil
	})
}
