package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/klog/v2"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testlog"
)

// TestLogsAreJSON: what client-go writes through klog and what net/http
// writes to its error log come out as JSON records on the process's log.
func TestLogsAreJSON(t *testing.T) {
	var buf testlog.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	routeKlog(log)
	t.Cleanup(func() { klog.ClearLogger() })
	utilruntime.HandleError(errors.New("Copying stdin failed: io: read/write on closed pipe"))
	klog.ErrorS(errors.New("broken pipe"), "Websocket Ping failed")
	klog.Warning("a plain klog warning")
	errorLog(log).Printf("http: Accept error: accept tcp [::]:8080: accept4: too many open files; retrying in 5ms")
	klog.Flush()

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4:\n%s", len(lines), buf.String())
	}
	for _, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["msg"] == nil || m["level"] == nil {
			t.Errorf("not a JSON record: %q", line)
		}
	}
	if !strings.Contains(lines[3], `"level":"WARN"`) || !strings.Contains(lines[3], "too many open files") {
		t.Errorf("net/http's error line: %s", lines[3])
	}
}

// TestErrorLogSampled: a flood of one kind of net/http error (any client
// can cause TLS handshake errors) writes a burst, not a line each; another
// kind still gets through.
func TestErrorLogSampled(t *testing.T) {
	var buf testlog.Buffer
	l := errorLog(slog.New(slog.NewJSONHandler(&buf, nil)))
	for i := range 1000 {
		l.Printf("http: TLS handshake error from 127.0.0.1:%d: EOF", 1000+i)
	}
	l.Printf("http: Accept error: accept tcp [::]:8080: accept4: too many open files; retrying in 5ms")
	text := buf.String()
	if n := strings.Count(text, "TLS handshake error"); n > 21 || n == 0 {
		t.Fatalf("1000 handshake errors wrote %d lines", n)
	}
	if !strings.Contains(text, "Accept error") {
		t.Fatalf("another kind of error was dropped:\n%s", text)
	}
}
