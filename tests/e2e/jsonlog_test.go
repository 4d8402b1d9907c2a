package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// assertJSONLog fails t unless every line the proxy wrote is one JSON
// object: klog (client-go's "Unhandled Error", "Copying stdin failed",
// "Websocket Ping failed") and net/http's error log included. startEnv
// runs it for every proxy of the e2e run once the proxy has stopped, so
// the whole log, drain included, is checked.
func assertJSONLog(t *testing.T, p *testenv.Proxy) {
	t.Helper()
	text := p.LogText()
	if strings.Contains(text, "WARNING: DATA RACE") {
		return // reported on its own, and the race detector writes text
	}
	bad := 0
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["msg"] == nil || m["level"] == nil {
			if bad++; bad <= 5 {
				t.Errorf("proxy log line %d is not a JSON log record: %q", i+1, line)
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d lines in all are not JSON records", bad)
	}
}
