package tests

import (
	"strings"
	"testing"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// NOTES.txt tells the operator how to check the install and rotate the key.
// Only helm v4 renders NOTES without a cluster (`install --dry-run=client`);
// v3's client dry-run still asks a cluster for its version, and `template`
// never renders NOTES. The text does not depend on the helm version.
func TestNotes(t *testing.T) {
	h := helm{bin: helmBin(t, tools.HelmV4Version), version: tools.HelmV4Version, chart: chartPath(t)}
	notes := func(args ...string) string {
		t.Helper()
		all := append([]string{"install", "proxy", h.chart, "--dry-run=client", "--namespace", ns}, args...)
		out, stderr, err := h.run(t, all...)
		if err != nil {
			t.Fatalf("helm install --dry-run=client: %v\n%s", err, stderr)
		}
		_, n, ok := strings.Cut(out, "NOTES:\n")
		if !ok {
			t.Fatalf("no NOTES in:\n%s", out)
		}
		return n
	}
	on := notes("--set", "enabled=true", "--set", "image.tag=v0.1.0")
	for _, want := range []string{
		"logs daemonset/k8s-ws-proxy | grep listening",
		"get secret k8s-ws-proxy-hmac",
		"delete secret k8s-ws-proxy-hmac",
		"helm upgrade proxy",
		"hostname=k8s-ws-proxy." + ns + ".svc",
	} {
		if !strings.Contains(on, want) {
			t.Errorf("NOTES lack %q:\n%s", want, on)
		}
	}
	tls := notes("-f", testdata("values-existing-tls.yaml"), "--set", "bootstrap.enabled=false")
	for _, want := range []string{"use-ssl=true", "client-cert/client-key", "the hook is DISABLED"} {
		if !strings.Contains(tls, want) {
			t.Errorf("TLS NOTES lack %q:\n%s", want, tls)
		}
	}
	if off := notes(); !strings.Contains(off, "disabled (enabled=false): nothing was installed") {
		t.Errorf("disabled NOTES:\n%s", off)
	}
}
