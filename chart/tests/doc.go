// Package tests renders the k8s-ws-proxy Helm chart with the real helm
// binaries (v3 and v4, pinned in internal/tools and built from the Go module
// proxy) and checks what Kubernetes and an operator would see: which objects
// exist, hook order, RBAC, images, security settings, schema and lint
// results, and strict validation of every manifest against the OpenAPI schema
// of the pinned Kubernetes release. It also checks that the binary built the
// Dockerfile's way is static.
//
// It lives beside the chart (and is excluded from the packaged chart by
// .helmignore) so a chart change and its test change land together.
package tests
