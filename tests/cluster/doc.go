// Package cluster runs the project's pieces against a real kube-apiserver
// (internal/kubeapi): the Helm chart applied with server-side apply, the
// bootstrap command under exactly the chart's hook Role, the proxy's
// ClusterRole checked for sufficiency and minimality, exec end to end through
// the API server's WebSocket-to-SPDY translation into a kubelet-shaped local
// exec backend, and key rotation as an operator performs it. Everything is in
// its tests; this file only carries the package documentation.
package cluster
