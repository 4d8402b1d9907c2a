// Package testenv is support for tests that run the built k8s-ws-proxy
// binary: building it once per test package, running `k8s-ws-proxy serve`
// and reading its JSON log and metrics, the kubeconfig it is pointed with,
// session tokens, and a client that behaves on the wire exactly as guacd
// does. It is shared by tests/e2e, tests/bench and tests/cluster so that
// the three suites check the proxy through one harness.
package testenv
