package bench

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
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

const observersCount = 5

// BenchmarkObservers: a session's bulk stdout throughput with 5 observers
// attached against none, through the same proxy (WebSocket upstream,
// frame relay) in the same run, in interleaved pairs (the order
// alternates); the figure is the median of the pairs' ratios, with the
// proxy's CPU per GB of the session's output beside it. Target (issues 15
// and 19): within 10%, i.e. >= 0.90x.
func BenchmarkObservers(b *testing.B) {
	e := newEnv(b)
	p := e.startProxy(b, exec.TransportWebSocket, "--frame-relay=auto")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.front.PEM)
	d := &websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io"}, TLSClientConfig: &tls.Config{RootCAs: pool},
		HandshakeTimeout: 10 * time.Second}
	size := *observerBytes
	pid := p.Process().Pid
	dropped := 0
	run := func(n int) (time.Duration, time.Duration, error) {
		c0, err := cpuTime(pid)
		if err != nil {
			return 0, 0, err
		}
		el, k, err := observedBulk(e, p, d, size, n)
		dropped += k
		c1, cerr := cpuTime(pid)
		return el, c1 - c0, errors.Join(err, cerr)
	}
	if _, _, err := run(observersCount); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ResetTimer()
	dropped = 0
	var ratios, cpuRatios, none, five []float64
	var cpu [2]time.Duration
	for i := range max(b.N, *observerPairs) {
		var t, c [2]time.Duration
		for _, k := range [][]int{{0, 1}, {1, 0}}[i%2] {
			d, used, err := run(k * observersCount)
			if err != nil {
				b.Fatalf("%d observers: %v", k*observersCount, err)
			}
			t[k], c[k] = d, used
			cpu[k] += used
		}
		mb := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
		none, five = append(none, mb(t[0])), append(five, mb(t[1]))
		ratios = append(ratios, mb(t[1])/mb(t[0]))
		cpuRatios = append(cpuRatios, ratioOf(float64(c[1]), float64(c[0])))
	}
	b.StopTimer()
	med := func(v []float64) float64 { _, m, _ := quartiles(v); return m }
	r, rmed := ratioSummary(ratios)
	cr, _ := ratioSummary(cpuRatios)
	b.ReportMetric(med(none), "none-MB/s")
	b.ReportMetric(med(five), "5obs-MB/s")
	b.ReportMetric(rmed, "5obs/none")
	b.ReportMetric(float64(dropped), "observers-dropped")
	b.Logf("%d pairs x %d MiB: pairs' ratios %s", len(ratios), size>>20, fmtRatios(ratios))
	st := stack{group: groupObs, names: [nPaths]string{"-", "none", "5 observers"}}
	mbs := func(v float64) string { return fmt.Sprintf("%.0f MB/s", v) }
	st.set(b, row{
		metric: "bulk stdout: throughput of the session's own client", vals: [nPaths]string{"-", mbs(med(none)), mbs(med(five))},
		compared: st.compared(proxied, relayed), ratio: r, target: atLeast(0.90), pass: rmed >= 0.90,
		samples: fmt.Sprintf("%d pairs x %d MiB; %d of %d observers fell behind and were dropped (close 1013)",
			len(ratios), size>>20, dropped, len(ratios)*observersCount),
	})
	gb := float64(size) * float64(len(ratios)) / 1e9
	cs := func(d time.Duration) string { return fmt.Sprintf("%.2f s/GB", d.Seconds()/gb) }
	st.set(b, row{
		metric: "bulk: proxy CPU per GB of the session's output", vals: [nPaths]string{"-", cs(cpu[0]), cs(cpu[1])},
		compared: st.compared(proxied, relayed), ratio: cr, target: "-",
		samples: "utime+stime from /proc; the observers' copies are the proxy's work too",
	})
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
