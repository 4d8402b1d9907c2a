// Package tools builds and caches the pinned external programs that the test
// suites run for real (helm, kubeconform, kube-apiserver, etcd). Every tool
// comes from the Go module proxy at the version pinned here, is built once and
// cached under the repository's .cache directory, and is reused on warm runs.
package tools

// KubernetesVersion is the one Kubernetes release the project tests against:
// the API server in the end-to-end harness, the kube-version the chart is
// rendered for, and the OpenAPI schemas manifests are validated with. The
// client libraries in go.mod (k8s.io/client-go v0.37.x) follow the same minor.
const KubernetesVersion = "1.37.2"
