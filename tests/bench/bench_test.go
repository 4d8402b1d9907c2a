package bench

import (
	"flag"
	"fmt"
	"math"
	"os"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
)

var (
	bulkBytes    = flag.Int64("bulk.bytes", 64<<20, "stdout bytes per bulk-throughput session")
	bulkRounds   = flag.Int("bulk.rounds", 8, "least direct/relay/proxy rounds of bulk sessions, whatever b.N")
	echoSamples  = flag.Int("echo.samples", 3000, "least echo round trips a path, whatever b.N")
	echoBlocks   = flag.Int("echo.blocks", 10, "interleaved blocks the echo samples are cut into, one ratio each")
	setupRounds  = flag.Int("setup.sessions", 200, "least direct/relay/proxy rounds of setup sessions, whatever b.N")
	idleSessions = flag.Int("idle.sessions", 1000, "idle sessions held open for the memory measurement")
	idleParallel = flag.Int("idle.parallel", 16, "idle sessions opened at once while building up the set")
	enforce      = flag.Bool("targets.enforce", false, "fail a benchmark whose result misses its target (the table always says)")
)

// transports are the proxy's upstream transports toward the local
// backend; the direct and relay clients use the same one. WebSocket comes
// first: it is what the proxy speaks to a real API server.
var transports = []exec.Transport{exec.TransportWebSocket, exec.TransportSPDY}

func groupOf(tr exec.Transport) string {
	if tr == exec.TransportWebSocket {
		return groupWS
	}
	return groupSPDY
}

// order rotates which path goes first in round i (direct, relay, proxy;
// relay, proxy, direct; ...), so that drift in the machine's load hits
// every path alike.
func order(i int) [nPaths]int {
	var o [nPaths]int
	for j := range o {
		o[j] = (i + j) % nPaths
	}
	return o
}

// stack is what one measurement needs: the three paths to one endpoint and
// the processes whose CPU time is read around each session.
type stack struct {
	group string
	paths [nPaths]path
	proxy *proxyProc
	relay int // pid of the relay
	back  int // pid of the backend (the kubelet behind an API server)
}

func (e *env) stack(tb testing.TB, group string, tr exec.Transport) stack {
	tb.Helper()
	paths, p := e.paths(tb, tr)
	results.note("backend: cmd/local-exec-backend (upstream kubelet streaming server, real processes) in its own process, serving TLS")
	results.note("direct: package exec (client-go's executor, the row group's transport) straight to the endpoint")
	results.note("relay:  the same client through tests/bench/relay (TLS in, TLS out, io.Copy both ways), where the proxy sits")
	results.note("proxy:  client-go WebSocket executor (v5) over TLS -> k8s-ws-proxy (built without -race, --exec-transport = the group's) -> the endpoint")
	return stack{group: group, paths: paths, proxy: p, relay: e.relay.Process().Pid, back: e.backend.proc.Process().Pid}
}

func check(b *testing.B, metric string, ok bool) {
	if !ok && *enforce {
		b.Errorf("%s misses its target", metric)
	}
}

// perTransport runs f as one sub-benchmark per upstream transport, all
// against one backend and relay.
func perTransport(b *testing.B, f func(b *testing.B, s stack)) {
	e := newEnv(b)
	for _, tr := range transports {
		b.Run("upstream="+string(tr), func(b *testing.B) { f(b, e.stack(b, groupOf(tr), tr)) })
	}
}

// BenchmarkBulkStdout: stdout throughput without a tty, and the CPU time
// per GB of each process on the way. Targets: proxy throughput at least
// 0.95x the relay's, proxy CPU per GB at most 1.3x the relay's.
func BenchmarkBulkStdout(b *testing.B) { perTransport(b, bulk) }

func bulk(b *testing.B, st stack) {
	size := *bulkBytes
	// One 64 MiB round already exceeds the default -benchtime, so b.N
	// alone would often give a single sample.
	rounds := max(b.N, *bulkRounds)
	var m cpuMeter
	m.add("bench client", os.Getpid())
	m.add("relay", st.relay)
	m.add("proxy", st.proxy.Process().Pid)
	m.add("backend", st.back)
	const client, relay, proxy, backend = 0, 1, 2, 3
	var (
		spent [nPaths]time.Duration
		hop   [nPaths]time.Duration // the middle process: relay or proxy
		all   [nPaths]time.Duration // client + middle + backend
		tput  [nPaths][]float64     // per round, MB/s
		hopR  [nPaths][]float64     // per round, CPU s per GB of the middle
		calls [nPaths]int64         // read+write system calls of the middle
	)
	// One uncounted session a path first: a process's first session pays
	// one-time costs (clients built, pools and buffers grown) that would
	// weigh on a small -bulk.bytes.
	for k := range nPaths {
		if _, err := bulkOnce(st.paths[k], 1<<20); err != nil {
			b.Fatalf("%s: warm-up: %v", pathNames[k], err)
		}
	}
	b.ResetTimer()
	st.proxy.profiled(b, func() {
		for i := range rounds {
			for _, k := range order(i) {
				c0, err := m.read()
				if err != nil {
					b.Fatal(err)
				}
				d, err := bulkOnce(st.paths[k], size)
				if err != nil {
					b.Fatalf("%s: %v", pathNames[k], err)
				}
				c1, err := m.read()
				if err != nil {
					b.Fatal(err)
				}
				delta := func(j int) time.Duration { return c1.cpu[j] - c0.cpu[j] }
				var h time.Duration
				switch k {
				case relayed:
					h = delta(relay)
					calls[k] += c1.calls[relay] - c0.calls[relay]
				case proxied:
					h = delta(proxy)
					calls[k] += c1.calls[proxy] - c0.calls[proxy]
				}
				spent[k] += d
				hop[k] += h
				all[k] += delta(client) + h + delta(backend)
				tput[k] = append(tput[k], float64(size)/d.Seconds()/1e6)
				hopR[k] = append(hopR[k], h.Seconds()/(float64(size)/1e9))
			}
		}
	})
	b.StopTimer()
	gb := float64(size) * float64(rounds) / 1e9
	var mbps, hopPerGB, allPerGB [nPaths]float64
	for k := range nPaths {
		mbps[k] = gb * 1e3 / spent[k].Seconds()
		hopPerGB[k] = hop[k].Seconds() / gb
		allPerGB[k] = all[k].Seconds() / gb
	}
	ratios := func(num, den []float64) []float64 {
		out := make([]float64, len(num))
		for i := range num {
			out[i] = ratioOf(num[i], den[i])
		}
		return out
	}
	tr, tmed := ratioSummary(ratios(tput[proxied], tput[relayed]))
	cr, cmed := ratioSummary(ratios(hopR[proxied], hopR[relayed]))
	_, dmed := ratioSummary(ratios(tput[proxied], tput[direct]))
	b.ReportMetric(mbps[direct], "direct-MB/s")
	b.ReportMetric(mbps[relayed], "relay-MB/s")
	b.ReportMetric(mbps[proxied], "proxy-MB/s")
	b.ReportMetric(tmed, "proxy/relay")
	b.ReportMetric(dmed, "proxy/direct")
	b.ReportMetric(hopPerGB[relayed], "relay-CPU-s/GB")
	b.ReportMetric(hopPerGB[proxied], "proxy-CPU-s/GB")
	b.ReportMetric(cmed, "proxy/relay-CPU")
	samples := fmt.Sprintf("%d rounds x %d MiB a path", rounds, size>>20)
	mb := func(v float64) string { return fmt.Sprintf("%.0f MB/s", v) }
	results.set(row{
		group: st.group, metric: "bulk stdout, no tty: throughput",
		vals:     [nPaths]string{mb(mbps[0]), mb(mbps[1]), mb(mbps[2])},
		compared: "proxy/relay", ratio: tr, target: ">= 0.95x", pass: tmed >= 0.95, samples: samples,
	})
	check(b, st.group+": bulk throughput", tmed >= 0.95)
	cs := func(v float64) string { return fmt.Sprintf("%.2f s/GB", v) }
	results.set(row{
		group: st.group, metric: "bulk: CPU of the middle process",
		vals:     [nPaths]string{"-", cs(hopPerGB[1]), cs(hopPerGB[2])},
		compared: "proxy/relay", ratio: cr, target: "<= 1.30x", pass: cmed <= 1.3,
		samples: samples + "; utime+stime from /proc, 10 ms ticks",
	})
	check(b, st.group+": bulk CPU per GB", cmed <= 1.3)
	perMB := func(k int) string { return fmt.Sprintf("%.1f /MB", float64(calls[k])/(gb*1e3)) }
	results.set(row{
		group: st.group, metric: "bulk: read+write syscalls of the middle",
		vals:     [nPaths]string{"-", perMB(relayed), perMB(proxied)},
		compared: "proxy/relay", ratio: fmt.Sprintf("%.2fx (totals)", ratioOf(float64(calls[proxied]), float64(calls[relayed]))), target: "-",
		samples: "syscr+syscw from /proc/<pid>/io",
	})
	results.set(row{
		group: st.group, metric: "bulk: CPU of client+middle+backend",
		vals:     [nPaths]string{cs(allPerGB[0]), cs(allPerGB[1]), cs(allPerGB[2])},
		compared: "proxy/direct", ratio: fmt.Sprintf("%.2fx (totals)", ratioOf(allPerGB[2], allPerGB[0])), target: "-",
		samples: "the bench process's own CPU counts as the client; the command's is not counted",
	})
}

// BenchmarkTTYEcho: one byte typed into a tty and echoed by the process,
// round trip. Targets: what the proxy adds to the direct round trip at
// most 1.2x what the bare relay adds at p50, 1.5x at p99.
func BenchmarkTTYEcho(b *testing.B) { perTransport(b, echo) }

func echo(b *testing.B, st stack) {
	var sess [nPaths]*echoSession
	for k, p := range st.paths {
		s, err := openEcho(p)
		if err != nil {
			b.Fatal(err)
		}
		sess[k] = s
		b.Cleanup(func() { s.close() })
	}
	n := max(b.N, *echoSamples)
	var samples [nPaths][]time.Duration
	b.ResetTimer()
	st.proxy.profiled(b, func() {
		for i := range n {
			c := byte('a' + i%26)
			for _, k := range order(i) {
				d, err := sess[k].roundTrip(c)
				if err != nil {
					b.Fatalf("%s: round trip %d: %v", pathNames[k], i, err)
				}
				samples[k] = append(samples[k], d)
			}
		}
	})
	b.StopTimer()
	for k, s := range sess {
		if err := s.close(); err != nil {
			b.Fatalf("%s: closing the echo session: %v", pathNames[k], err)
		}
	}
	blocks := min(max(*echoBlocks, 1), n)
	for _, q := range []struct {
		p      float64
		target float64
	}{{50, 1.2}, {99, 1.5}} {
		var all [nPaths]time.Duration
		for k := range nPaths {
			all[k] = percentile(samples[k], q.p)
		}
		// One excess ratio per block of consecutive rounds: each block's
		// percentiles come from the same stretch of the machine's load.
		var ratios []float64
		for j := range blocks {
			lo, hi := j*n/blocks, (j+1)*n/blocks
			var pk [nPaths]float64
			for k := range nPaths {
				pk[k] = float64(percentile(samples[k][lo:hi], q.p))
			}
			ratios = append(ratios, excess(pk[proxied]-pk[direct], pk[relayed]-pk[direct]))
		}
		r, med := ratioSummary(ratios)
		for k := range nPaths {
			b.ReportMetric(float64(all[k])/1e3, fmt.Sprintf("%s-p%.0f-µs", pathNames[k], q.p))
		}
		b.ReportMetric(med, fmt.Sprintf("excess-ratio-p%.0f", q.p))
		metric := fmt.Sprintf("tty 1-byte echo round trip, p%.0f", q.p)
		results.set(row{
			group: st.group, metric: metric,
			vals:     [nPaths]string{ms(all[0]), ms(all[1]), ms(all[2])},
			compared: "(proxy-direct)/(relay-direct)", ratio: r,
			target: fmt.Sprintf("<= %.1fx", q.target), pass: med <= q.target,
			samples: fmt.Sprintf("%d a path, %d blocks", n, blocks),
		})
		check(b, st.group+": "+metric, med <= q.target)
	}
}

// excess is what the proxy adds over what the relay adds; a relay that
// adds nothing measurable makes any proxy excess infinitely worse.
func excess(proxyAdds, relayAdds float64) float64 {
	if relayAdds <= 0 {
		if proxyAdds <= 0 {
			return 1
		}
		return math.Inf(1)
	}
	return proxyAdds / relayAdds
}

// BenchmarkSetupFirstByte: from dialling (token already minted) to the
// first byte of `echo ok`. Target: p50 at most 1.3x direct.
func BenchmarkSetupFirstByte(b *testing.B) { perTransport(b, setup) }

func setup(b *testing.B, st stack) {
	// The default -benchtime gives about 50 sessions a path, too few for a
	// stable median on a shared machine.
	rounds := max(b.N, *setupRounds)
	var samples [nPaths][]time.Duration
	var ratios []float64
	b.ResetTimer()
	for i := range rounds {
		var got [nPaths]time.Duration
		for _, k := range order(i) {
			d, err := setupOnce(st.paths[k])
			if err != nil {
				b.Fatalf("%s: session %d: %v", pathNames[k], i, err)
			}
			got[k] = d
			samples[k] = append(samples[k], d)
		}
		ratios = append(ratios, ratioOf(float64(got[proxied]), float64(got[direct])))
	}
	b.StopTimer()
	var p50 [nPaths]time.Duration
	for k := range nPaths {
		p50[k] = percentile(samples[k], 50)
		b.ReportMetric(float64(p50[k])/1e3, pathNames[k]+"-p50-µs")
	}
	r, med := ratioSummary(ratios)
	b.ReportMetric(med, "proxy/direct")
	const metric = "session setup to first byte, p50"
	results.set(row{
		group: st.group, metric: metric,
		vals:     [nPaths]string{ms(p50[0]), ms(p50[1]), ms(p50[2])},
		compared: "proxy/direct", ratio: r, target: "<= 1.3x", pass: med <= 1.3,
		samples: fmt.Sprintf("%d rounds", rounds),
	})
	check(b, st.group+": "+metric, med <= 1.3)
}

// BenchmarkIdleSessionMemory: resident memory per idle session of the
// proxy and of the relay, with -idle.sessions open at once, for each
// transport toward the backend. Target: the proxy at most 128 KiB a
// WebSocket session (what it speaks to a real API server). Each run is
// one measurement, whatever b.N.
func BenchmarkIdleSessionMemory(b *testing.B) {
	e := newEnv(b)
	for _, tr := range transports {
		b.Run("upstream="+string(tr), func(b *testing.B) { idleMemory(b, e, tr) })
	}
}

// idleFigures is one process's growth with the idle sessions open.
type idleFigures struct {
	rssKiB, heapKiB, goroutines, fds float64 // per session
	opened                           time.Duration
}

// idleDone keeps each sub-benchmark's figures: a run shorter than
// -benchtime is called again with a larger b.N, and one measurement is
// all there is to report.
var idleDone = map[string][2]idleFigures{}

func idleMemory(b *testing.B, e *env, tr exec.Transport) {
	n := *idleSessions
	figs, ok := idleDone[b.Name()]
	if !ok {
		paths, p := e.paths(b, tr)
		var err error
		if figs[0], err = idleRun(b, e, paths[relayed], n, e.relay, nil); err != nil {
			b.Fatalf("relay: %v", err)
		}
		if figs[1], err = idleRun(b, e, paths[proxied], n, p.Proxy, p); err != nil {
			b.Fatalf("proxy: %v", err)
		}
		idleDone[b.Name()] = figs
	}
	rel, prx := figs[0], figs[1]
	b.ReportMetric(prx.rssKiB, "KiB/session")
	b.ReportMetric(prx.heapKiB, "heap-KiB/session")
	b.ReportMetric(prx.goroutines, "goroutines/session")
	b.ReportMetric(prx.fds, "fds/session")
	b.ReportMetric(rel.rssKiB, "relay-KiB/session")
	group := groupOf(tr)
	target, pass := "-", false
	if tr == exec.TransportWebSocket {
		target, pass = "<= 128 KiB", prx.rssKiB <= 128
		check(b, group+": idle RSS per session", pass)
	}
	kib := func(v float64) string { return fmt.Sprintf("%.0f KiB", v) }
	results.set(row{
		group: group, metric: "RSS per idle session",
		vals:     [nPaths]string{"-", kib(rel.rssKiB), kib(prx.rssKiB)},
		compared: "proxy/relay", ratio: fmt.Sprintf("%.2fx", ratioOf(prx.rssKiB, rel.rssKiB)),
		target: target, pass: pass,
		samples: fmt.Sprintf("%d open; proxy Go heap in use %.0f KiB a session", n, prx.heapKiB),
	})
	g := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	results.set(row{
		group: group, metric: "goroutines / fds per idle session",
		vals:     [nPaths]string{"-", "3 / " + g(rel.fds), g(prx.goroutines) + " / " + g(prx.fds)},
		compared: "-", ratio: "-", target: "-",
		samples: fmt.Sprintf("%d open; the relay has no /metrics: 3 goroutines a connection by construction", n),
	})
}
