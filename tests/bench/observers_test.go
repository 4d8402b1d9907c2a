package bench

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

var (
	observerBytes = flag.Int("observers.bytes", 32<<20, "stdout bytes per session of BenchmarkObservers")
	observerPairs = flag.Int("observers.pairs", 7, "interleaved pairs (no observer, 5 observers) of BenchmarkObservers")
)

const observersCount = 5

// BenchmarkObservers: a session's bulk stdout throughput with 5 observers
// attached against none, through the same proxy in the same run, in
// interleaved pairs (the order alternates); the figure is the median of
// the pairs' ratios. Target (issue 15): within 10%, i.e. >= 0.90x.
func BenchmarkObservers(b *testing.B) {
	e := newEnv(b)
	p := e.startProxy(b, exec.TransportWebSocket)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.front.PEM)
	d := &websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io"}, TLSClientConfig: &tls.Config{RootCAs: pool},
		HandshakeTimeout: 10 * time.Second}
	size := *observerBytes
	dropped := 0
	run := func(n int) (time.Duration, error) {
		el, k, err := observedBulk(e, p, d, size, n)
		dropped += k
		return el, err
	}
	if _, err := run(observersCount); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ResetTimer()
	dropped = 0
	var ratios, none, five []float64
	for i := range max(b.N, *observerPairs) {
		var t [2]time.Duration
		for _, k := range [][]int{{0, 1}, {1, 0}}[i%2] {
			d, err := run(k * observersCount)
			if err != nil {
				b.Fatalf("%d observers: %v", k*observersCount, err)
			}
			t[k] = d
		}
		mb := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
		none, five = append(none, mb(t[0])), append(five, mb(t[1]))
		ratios = append(ratios, mb(t[1])/mb(t[0]))
	}
	b.StopTimer()
	med := func(v []float64) float64 { s := slices.Sorted(slices.Values(v)); return s[len(s)/2] }
	b.ReportMetric(med(none), "none-MB/s")
	b.ReportMetric(med(five), "5obs-MB/s")
	b.ReportMetric(med(ratios), "5obs/none")
	b.ReportMetric(float64(dropped), "observers-dropped")
	b.Logf("%d pairs x %d MiB: no observer %.0f MB/s, 5 observers %.0f MB/s, median ratio %.2fx (pairs %s); target >= 0.90x; "+
		"%d of %d observers fell behind and were dropped (close 1013)",
		len(ratios), size>>20, med(none), med(five), med(ratios), fmtRatios(ratios), dropped, len(ratios)*observersCount)
	check(b, fmt.Sprintf("throughput with %d observers (%.2fx of none, >= 0.90x)", observersCount, med(ratios)), med(ratios) >= 0.90)
}

func fmtRatios(r []float64) string {
	s := make([]string, len(r))
	for i, v := range r {
		s[i] = fmt.Sprintf("%.2f", v)
	}
	return strings.Join(s, " ")
}

// observedBulk runs one session that writes size bytes of stdout once n
// observers have joined (each reading everything as fast as it can), and
// returns how long the session's own client took from the go signal to its
// last byte, and how many observers fell behind and were dropped (the
// proxy's answer to an observer slower than the session: close 1013).
func observedBulk(e *env, p *proxyProc, d *websocket.Dialer, size, n int) (time.Duration, int, error) {
	sid := "bench-" + hmac.NewID()[:12]
	cmd := []string{"sh", "-c", fmt.Sprintf("echo ready; read x; exec head -c %d /dev/zero", size)}
	at := testenv.Target{Namespace: benchNamespace, Pod: benchPod, Container: benchContainer, Node: benchNode}
	c := testenv.Claims(at, cmd...)
	c.SID, c.Stdin = sid, true
	owner, err := dialClaims(e, p, d, c)
	if err != nil {
		return 0, 0, err
	}
	defer owner.Close()
	if _, msg, err := owner.ReadMessage(); err != nil || string(msg) != "\x01ready\n" {
		return 0, 0, fmt.Errorf("owner: first frame %q %v", msg, err)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	var fell atomic.Int32
	for i := range n {
		oc := testenv.Claims(at, cmd...)
		oc.SID, oc.Mode, oc.Subject = sid, hmac.ModeObserve, fmt.Sprintf("observer-%d", i)
		obs, err := dialClaims(e, p, d, oc)
		if err != nil {
			return 0, 0, fmt.Errorf("observer %d: %w", i, err)
		}
		defer obs.Close()
		wg.Go(func() {
			got := 0
			obs.SetReadDeadline(time.Now().Add(2 * time.Minute))
			for {
				_, msg, err := obs.ReadMessage()
				if err != nil {
					var ce *websocket.CloseError
					switch {
					case errors.As(err, &ce) && ce.Code == websocket.CloseTryAgainLater:
						fell.Add(1)
					case !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure:
						errs[i] = fmt.Errorf("observer %d ended with %v", i, err)
					}
					return
				}
				if len(msg) > 0 && msg[0] == 1 {
					got += len(msg) - 1
				}
				if got > size+len("ready\n") {
					errs[i] = fmt.Errorf("observer %d got %d bytes", i, got)
				}
			}
		})
	}
	start := time.Now()
	if err := owner.WriteMessage(websocket.BinaryMessage, []byte("\x00go\n")); err != nil {
		return 0, 0, err
	}
	got := 0
	owner.SetReadDeadline(time.Now().Add(2 * time.Minute))
	for got < size {
		_, msg, err := owner.ReadMessage()
		if err != nil {
			return 0, 0, fmt.Errorf("owner after %d bytes: %w", got, err)
		}
		if len(msg) > 0 && msg[0] == 1 {
			got += len(msg) - 1
		}
	}
	elapsed := time.Since(start)
	for {
		if _, _, err := owner.ReadMessage(); err != nil {
			break
		}
	}
	wg.Wait()
	return elapsed, int(fell.Load()), errors.Join(errs...)
}

func dialClaims(e *env, p *proxyProc, d *websocket.Dialer, c hmac.Claims) (*websocket.Conn, error) {
	tok, err := e.signer.Sign(c)
	if err != nil {
		return nil, err
	}
	u := "wss" + strings.TrimPrefix(testenv.ExecURL(p.Addr, c, true), "http")
	ws, resp, err := d.Dial(u, http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		return nil, fmt.Errorf("dial: %w (%v)", err, resp)
	}
	return ws, nil
}
