package kubeapi

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// TestControlPlane proves what the chart tests rely on: a Job's pod is
// admitted, scheduled, run by the JobRunner and completes the Job; a
// DaemonSet gets a Running pod on every fake node; a pod naming a missing
// ServiceAccount is refused by admission, as in a real cluster.
func TestControlPlane(t *testing.T) {
	var ran atomic.Int32
	s := New(t, Options{ControlPlane: true, FakeNodes: 2, JobRunner: func(ctx context.Context, _ *Server, pod *corev1.Pod) int {
		ran.Add(1)
		if pod.Spec.NodeName == "" {
			return 3
		}
		return 0
	}})
	t.Logf("etcd %s, kube-apiserver %s, controller-manager+scheduler+KWOK+nodes %s",
		s.EtcdStartup.Round(time.Millisecond), s.APIServerStartup.Round(time.Millisecond), s.ControlPlaneStartup.Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cs := s.AdminClient()
	const ns = "default"
	labels := map[string]string{"app": "cp-test"}
	podSpec := corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/c:1"}}}

	backoff := int32(0)
	job, err := cs.BatchV1().Jobs(ns).Create(ctx, &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "once"},
		Spec: batchv1.JobSpec{BackoffLimit: &backoff, Template: corev1.PodTemplateSpec{
			Spec: func() corev1.PodSpec { p := podSpec; p.RestartPolicy = corev1.RestartPolicyNever; return p }(),
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		j, err := cs.BatchV1().Jobs(ns).Get(ctx, job.Name, metav1.GetOptions{})
		return err == nil && j.Status.Succeeded == 1, nil
	})
	if err != nil {
		t.Fatalf("Job did not complete: %v", err)
	}
	if ran.Load() != 1 {
		t.Errorf("JobRunner ran %d times, want 1", ran.Load())
	}

	ds, err := cs.AppsV1().DaemonSets(ns).Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "every-node"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().DaemonSets(ns).Get(ctx, ds.Name, metav1.GetOptions{})
		return err == nil && d.Status.DesiredNumberScheduled == 2 && d.Status.NumberReady == 2, nil
	})
	if err != nil {
		t.Fatalf("DaemonSet not ready on both fake nodes: %v", err)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=cp-test"})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]bool{}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning {
			nodes[p.Spec.NodeName] = true
		}
	}
	for _, n := range s.FakeNodes {
		if !nodes[n] {
			t.Errorf("no Running DaemonSet pod on %s (pods on %v)", n, nodes)
		}
	}

	_, err = cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "no-sa"},
		Spec:       func() corev1.PodSpec { p := podSpec; p.ServiceAccountName = "missing"; return p }(),
	}, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), `serviceaccount "missing" not found`) {
		t.Errorf("pod with a missing ServiceAccount: err = %v, want refused by ServiceAccount admission", err)
	}
}
