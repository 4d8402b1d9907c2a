package main

import (
	"strings"
	"testing"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/proxy"
)

// TestExitNoticeOneDefault: serve without --exit-notice, and with its
// variable set but empty, both get proxy.ExitNoticeDefault (auto).
func TestExitNoticeOneDefault(t *testing.T) {
	for _, env := range []bool{false, true} {
		if env {
			t.Setenv("K8S_WS_PROXY_EXIT_NOTICE", "")
		}
		var o serveOptions
		var stderr strings.Builder
		if _, stop := newServeFlags(&o).parse(nil, &stderr, &stderr); stop {
			t.Fatal(stderr.String())
		}
		got, err := proxy.ParseExitNotice(o.rec.exitNotice)
		if err != nil || got != proxy.ExitNoticeDefault {
			t.Errorf("variable set empty %v: --exit-notice %q parses to %q (%v), want %q", env, o.rec.exitNotice, got, err, proxy.ExitNoticeDefault)
		}
	}
}
