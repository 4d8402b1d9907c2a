package exec

import (
	"sync"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// TestDialObserver: each transport reports exactly one accepted dial per
// session (auto's refused WebSocket attempt is not one), with a duration.
func TestDialObserver(t *testing.T) {
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		var mu sync.Mutex
		var dials []time.Duration
		ctx := WithDialObserver(testenv.Context(t, 30*time.Second), func(d time.Duration) {
			mu.Lock()
			dials = append(dials, d)
			mu.Unlock()
		})
		out := newSyncBuf()
		res, err := dialer(t, cfg, tr).Stream(ctx, Target{Namespace: "default", Pod: "demo", Container: "shell",
			Command: []string{"echo", "dialed"}, Stdout: true}, Streams{Stdout: out})
		if err != nil {
			t.Fatal(err)
		}
		if res.Transport != expectTransport(tr) {
			t.Fatalf("transport %s", res.Transport)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(dials) != 1 || dials[0] <= 0 {
			t.Fatalf("observed dials %v, want exactly one positive duration", dials)
		}
	})
	// Without an observer nothing is reported and nothing breaks.
	if _, err := dialer(t, cfg, TransportAuto).Stream(testenv.Context(t, 30*time.Second), Target{Namespace: "default", Pod: "demo",
		Container: "shell", Command: []string{"true"}, Stdout: true}, Streams{Stdout: newSyncBuf()}); err != nil {
		t.Fatal(err)
	}
}
