package kubeapi

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Workload names the Node and Pod CreateWorkload registers.
type Workload struct {
	Node, Namespace, Pod, Container string
	// KubeletPort is where the Node's kubelet listens on 127.0.0.1.
	KubeletPort int
	// Image is the container's image reference, without a tag; the Pod
	// runs Image+":1", as Image+"@sha256:0".
	Image string
}

// CreateWorkload creates what no controller reconciles here, as a kubelet
// and the scheduler would leave it: the Node (reachable at 127.0.0.1 on
// w.KubeletPort, Ready), w.Namespace, and the Pod (bound to the Node,
// Running, its container started).
func CreateWorkload(ctx context.Context, cs kubernetes.Interface, w Workload) error {
	node, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   w.Node,
		Labels: map[string]string{"kubernetes.io/hostname": w.Node, "kubernetes.io/os": "linux"},
	}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating Node: %w", err)
	}
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: w.Node}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(w.KubeletPort)}},
		Conditions:      []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting Node status: %w", err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.Namespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	pod, err := cs.CoreV1().Pods(w.Namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: w.Pod},
		Spec: corev1.PodSpec{
			NodeName:   w.Node,
			Containers: []corev1.Container{{Name: w.Container, Image: w.Image + ":1"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating Pod: %w", err)
	}
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: w.Container, Ready: true, Image: w.Image + ":1", ImageID: w.Image + "@sha256:0",
			ContainerID: "local://" + w.Pod, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
		HostIP: "127.0.0.1", StartTime: &now,
	}
	if _, err := cs.CoreV1().Pods(w.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting Pod status: %w", err)
	}
	return nil
}
