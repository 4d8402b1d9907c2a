// Package bench measures the proxy against a direct exec to the same local
// backend (localexec, the upstream kubelet streaming server running real
// processes), side by side in one run, so that the ratios, not the absolute
// numbers of a shared and noisy machine, are what is compared: bulk stdout
// throughput, tty echo round trip, session setup to first byte and the
// proxy's memory per idle session. A build-tagged load test (-tags load)
// runs many concurrent sessions with churn, each checking its own output.
//
// Everything lives in _test.go files; this file only carries the package
// documentation. See docs/benchmarks.md for how to run it and what the
// numbers were.
package bench
