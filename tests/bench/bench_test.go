package bench

import (
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
)

var (
	bulkBytes     = flag.Int64("bulk.bytes", 64<<20, "stdout bytes per bulk-throughput session")
	bulkRounds    = flag.Int("bulk.rounds", 8, "least direct/relay/proxy rounds of bulk sessions, whatever b.N")
	echoSamples   = flag.Int("echo.samples", 3000, "least echo round trips a path, whatever b.N")
	echoBlocks    = flag.Int("echo.blocks", 10, "interleaved blocks the echo samples are cut into, one ratio each")
	setupRounds   = flag.Int("setup.sessions", 200, "least direct/relay/proxy rounds of setup sessions, whatever b.N")
	idleSessions  = flag.Int("idle.sessions", 1000, "idle sessions held open for the memory measurement")
	idleParallel  = flag.Int("idle.parallel", 16, "idle sessions opened at once while building up the set")
	observerBytes = flag.Int("observers.bytes", 32<<20, "stdout bytes per session of BenchmarkObservers")
	observerPairs = flag.Int("observers.pairs", 7, "interleaved pairs (no observer, 5 observers) of BenchmarkObservers")
	enforce       = flag.Bool("targets.enforce", false, "fail the benchmark of every row that misses its target, not only the headline's (the table always says)")
)

// spec is one group of rows: the transport of the direct and relay
// clients and of the proxy toward the endpoint, and the proxy's flags.
type spec struct {
	group string
	tr    exec.Transport
	args  []string // the proxy's extra flags
	gate  bool     // a missed target fails make bench (the headline)
}

// specs are the local backend's groups. WebSocket with the frame relay
// comes first: it is what the proxy does toward a real API server.
// --frame-relay is given on both WebSocket groups, so that
// K8S_WS_PROXY_FRAME_RELAY in the environment (the e2e switch) cannot
// turn the headline into the demux path.
var specs = []spec{
	{group: groupWS, tr: exec.TransportWebSocket, args: []string{"--frame-relay=auto"}, gate: true},
	{group: groupDemux, tr: exec.TransportWebSocket, args: []string{"--frame-relay=off"}},
	{group: groupSPDY, tr: exec.TransportSPDY},
}

// name is the sub-benchmark's name.
func (s spec) name() string {
	if s.group == groupDemux {
		return "upstream=websocket-demux"
	}
	return "upstream=" + string(s.tr)
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

// targets are what a group's rows are held to; a zero figure has none.
type targets struct {
	bulk, bulkCPU    float64 // least throughput ratio, most CPU-per-GB ratio of the middle processes
	echoP50, echoP99 float64 // most echo ratio
	// echoExcess: the echo ratio is what the proxy adds to the direct
	// round trip over what the relay adds; otherwise proxy/relay.
	echoExcess bool
	setup      float64 // most proxy/direct setup p50
	idleKiB    float64 // most proxy RSS per idle session
}

// hopTargets are issue 19's, for a proxy against the bare relay.
var hopTargets = targets{bulk: 0.95, bulkCPU: 1.3, echoP50: 1.2, echoP99: 1.5, echoExcess: true, setup: 1.3}

// stack is what one group's measurements need: its paths (nil where the
// group has none), their column names, the process in the middle of each
// (whose CPU time is read around its sessions), the targets.
type stack struct {
	group string
	gate  bool
	names [nPaths]string
	paths [nPaths]path
	mids  [nPaths]int // pid of the middle process; 0 for direct
	back  int         // pid of the backend (the kubelet behind an API server)
	proxy *proxyProc  // the one profiled with -proxy.profile
	t     targets
	// bulkCmd is the bulk session's command (nil: head -c size /dev/zero).
	bulkCmd func(size int64) []string
	// after runs after each counted bulk session of path k, before the
	// CPU times are read again.
	after func(k int, size int64) error
}

func (e *env) stack(tb testing.TB, s spec) stack {
	tb.Helper()
	paths, p := e.paths(tb, s)
	results.note("backend: cmd/local-exec-backend (upstream kubelet streaming server, real processes) in its own process, serving TLS")
	results.note("direct: package exec (client-go's executor, the row group's transport) straight to the endpoint")
	results.note("relay:  the same client through tests/bench/relay (TLS in, TLS out, io.Copy both ways), where the proxy sits")
	results.note("proxy:  client-go WebSocket executor (v5) over TLS -> k8s-ws-proxy (built without -race, --exec-transport = the group's) -> the endpoint")
	return stack{group: s.group, gate: s.gate, names: pathNames, paths: paths, proxy: p, t: hopTargets,
		mids: [nPaths]int{0, e.relay.Process().Pid, p.Process().Pid}, back: e.backend.proc.Process().Pid}
}

// cpu reads the CPU time of each path's middle process (0 for direct).
func (st stack) cpu(b *testing.B) [nPaths]time.Duration {
	var out [nPaths]time.Duration
	for k, pid := range st.mids {
		if pid != 0 {
			d, err := cpuTime(pid)
			if err != nil {
				b.Fatal(err)
			}
			out[k] = d
		}
	}
	return out
}

// compared names a ratio of path a's figure to path b's.
func (st stack) compared(a, b int) string { return st.names[a] + "/" + st.names[b] }

// set adds a row of st's group to the table and fails b if the row
// misses its target and either gates make bench or -targets.enforce asks.
func (st stack) set(b *testing.B, r row) {
	r.group, r.cols, r.gate = st.group, st.names, st.gate && r.target != "-"
	results.set(r)
	if r.target != "-" && !r.pass && (r.gate || *enforce) {
		b.Errorf("%s: %s: %s %s misses its target %s", st.group, r.metric, r.compared, r.ratio, r.target)
	}
}

// perSpec runs f as one sub-benchmark per group of specs, all against
// one backend and relay.
func perSpec(b *testing.B, f func(b *testing.B, s stack)) {
	e := newEnv(b)
	for _, s := range specs {
		b.Run(s.name(), func(b *testing.B) { f(b, e.stack(b, s)) })
	}
}

// BenchmarkBulkStdout: stdout throughput without a tty, and the CPU time
// per GB of each process on the way. Targets: proxy throughput at least
// 0.95x the relay's, proxy CPU per GB at most 1.3x the relay's.
func BenchmarkBulkStdout(b *testing.B) { perSpec(b, bulk) }

func bulk(b *testing.B, st stack) {
	size := *bulkBytes
	// One 64 MiB round already exceeds the default -benchtime, so b.N
	// alone would often give a single sample.
	rounds := max(b.N, *bulkRounds)
	var m cpuMeter
	m.add("bench client", os.Getpid())
	m.add("backend", st.back)
	const client, backend = 0, 1
	mid := [nPaths]int{-1, -1, -1} // index of each path's middle process in m
	for k, pid := range st.mids {
		if pid != 0 {
			mid[k] = len(m.pids)
			m.add(st.names[k], pid)
		}
	}
	cmd := st.bulkCmd
	if cmd == nil {
		cmd = func(size int64) []string { return []string{"head", "-c", strconv.FormatInt(size, 10), "/dev/zero"} }
	}
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
	for k, p := range st.paths {
		if p == nil {
			continue
		}
		if _, err := bulkOnce(p, cmd(1<<20), 1<<20); err != nil {
			b.Fatalf("%s: warm-up: %v", st.names[k], err)
		}
		if st.after != nil {
			if err := st.after(k, 1<<20); err != nil {
				b.Fatalf("%s: warm-up: %v", st.names[k], err)
			}
		}
	}
	b.ResetTimer()
	st.proxy.profiled(b, func() {
		for i := range rounds {
			for _, k := range order(i) {
				if st.paths[k] == nil {
					continue
				}
				c0, err := m.read()
				if err != nil {
					b.Fatal(err)
				}
				d, err := bulkOnce(st.paths[k], cmd(size), size)
				if err != nil {
					b.Fatalf("%s: %v", st.names[k], err)
				}
				if st.after != nil {
					if err := st.after(k, size); err != nil {
						b.Fatalf("%s: %v", st.names[k], err)
					}
				}
				c1, err := m.read()
				if err != nil {
					b.Fatal(err)
				}
				delta := func(j int) time.Duration { return c1.cpu[j] - c0.cpu[j] }
				var h time.Duration
				if j := mid[k]; j >= 0 {
					h = delta(j)
					calls[k] += c1.calls[j] - c0.calls[j]
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
	b.ReportMetric(mbps[relayed], st.names[relayed]+"-MB/s")
	b.ReportMetric(mbps[proxied], st.names[proxied]+"-MB/s")
	b.ReportMetric(tmed, st.compared(proxied, relayed))
	b.ReportMetric(hopPerGB[relayed], st.names[relayed]+"-CPU-s/GB")
	b.ReportMetric(hopPerGB[proxied], st.names[proxied]+"-CPU-s/GB")
	b.ReportMetric(cmed, st.compared(proxied, relayed)+"-CPU")
	if st.paths[direct] != nil {
		_, dmed := ratioSummary(ratios(tput[proxied], tput[direct]))
		b.ReportMetric(mbps[direct], "direct-MB/s")
		b.ReportMetric(dmed, st.compared(proxied, direct))
	}
	samples := fmt.Sprintf("%d rounds x %d MiB a path", rounds, size>>20)
	vals := func(f func(k int) string) (v [nPaths]string) {
		for k := range nPaths {
			v[k] = "-"
			if st.paths[k] != nil {
				v[k] = f(k)
			}
		}
		return v
	}
	mb := func(k int) string { return fmt.Sprintf("%.0f MB/s", mbps[k]) }
	cs := func(v float64) string { return fmt.Sprintf("%.2f s/GB", v) }
	st.set(b, row{
		metric: "bulk stdout, no tty: throughput", vals: vals(mb),
		compared: st.compared(proxied, relayed), ratio: tr,
		target: atLeast(st.t.bulk), pass: tmed >= st.t.bulk, samples: samples,
	})
	st.set(b, row{
		metric:   "bulk: CPU of the middle process",
		vals:     [nPaths]string{"-", cs(hopPerGB[relayed]), cs(hopPerGB[proxied])},
		compared: st.compared(proxied, relayed), ratio: cr, target: atMost(st.t.bulkCPU), pass: st.t.bulkCPU == 0 || cmed <= st.t.bulkCPU,
		samples: samples + "; utime+stime from /proc, 10 ms ticks",
	})
	perMB := func(k int) string { return fmt.Sprintf("%.1f /MB", float64(calls[k])/(gb*1e3)) }
	st.set(b, row{
		metric:   "bulk: read+write syscalls of the middle",
		vals:     [nPaths]string{"-", perMB(relayed), perMB(proxied)},
		compared: st.compared(proxied, relayed), ratio: fmt.Sprintf("%.2fx (totals)", ratioOf(float64(calls[proxied]), float64(calls[relayed]))), target: "-",
		samples: "syscr+syscw from /proc/<pid>/io",
	})
	if st.paths[direct] != nil {
		st.set(b, row{
			metric:   "bulk: CPU of client+middle+backend",
			vals:     vals(func(k int) string { return cs(allPerGB[k]) }),
			compared: st.compared(proxied, direct), ratio: fmt.Sprintf("%.2fx (totals)", ratioOf(allPerGB[proxied], allPerGB[direct])), target: "-",
			samples: "the bench process's own CPU counts as the client; the command's is not counted",
		})
	}
}

// atLeast and atMost are a row's target ("-": none).
func atLeast(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(">= %.2fx", v)
}

func atMost(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("<= %.2fx", v)
}

// BenchmarkTTYEcho: one byte typed into a tty and echoed by the process,
// round trip. Targets: what the proxy adds to the direct round trip at
// most 1.2x what the bare relay adds at p50, 1.5x at p99.
func BenchmarkTTYEcho(b *testing.B) { perSpec(b, echo) }

func echo(b *testing.B, st stack) {
	var sess [nPaths]*echoSession
	for k, p := range st.paths {
		if p == nil {
			continue
		}
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
	cpu0 := st.cpu(b)
	st.proxy.profiled(b, func() {
		for i := range n {
			c := byte('a' + i%26)
			for _, k := range order(i) {
				if sess[k] == nil {
					continue
				}
				d, err := sess[k].roundTrip(c)
				if err != nil {
					b.Fatalf("%s: round trip %d: %v", st.names[k], i, err)
				}
				samples[k] = append(samples[k], d)
			}
		}
	})
	cpu1 := st.cpu(b)
	b.StopTimer()
	for k, s := range sess {
		if s == nil {
			continue
		}
		if err := s.close(); err != nil {
			b.Fatalf("%s: closing the echo session: %v", st.names[k], err)
		}
	}
	blocks := min(max(*echoBlocks, 1), n)
	compared := st.compared(proxied, relayed)
	if st.t.echoExcess {
		compared = fmt.Sprintf("(%s-direct)/(%s-direct)", st.names[proxied], st.names[relayed])
	}
	for _, q := range []struct {
		p      float64
		target float64
	}{{50, st.t.echoP50}, {99, st.t.echoP99}} {
		var all [nPaths]time.Duration
		for k := range nPaths {
			all[k] = percentile(samples[k], q.p)
		}
		// One ratio per block of consecutive rounds: each block's
		// percentiles come from the same stretch of the machine's load.
		var ratios []float64
		for j := range blocks {
			lo, hi := j*n/blocks, (j+1)*n/blocks
			var pk [nPaths]float64
			for k := range nPaths {
				if samples[k] != nil {
					pk[k] = float64(percentile(samples[k][lo:hi], q.p))
				}
			}
			if st.t.echoExcess {
				ratios = append(ratios, excess(pk[proxied]-pk[direct], pk[relayed]-pk[direct]))
			} else {
				ratios = append(ratios, ratioOf(pk[proxied], pk[relayed]))
			}
		}
		r, med := ratioSummary(ratios)
		var vals [nPaths]string
		for k := range nPaths {
			vals[k] = "-"
			if samples[k] != nil {
				vals[k] = ms(all[k])
				b.ReportMetric(float64(all[k])/1e3, fmt.Sprintf("%s-p%.0f-µs", st.names[k], q.p))
			}
		}
		b.ReportMetric(med, fmt.Sprintf("ratio-p%.0f", q.p))
		st.set(b, row{
			metric: fmt.Sprintf("tty 1-byte echo round trip, p%.0f", q.p), vals: vals,
			compared: compared, ratio: r, target: atMost(q.target), pass: q.target == 0 || med <= q.target,
			samples: fmt.Sprintf("%d a path, %d blocks", n, blocks),
		})
	}
	// CPU per round trip over the whole loop: a round trip costs well
	// under one 10 ms tick, so per-block figures would be all rounding.
	us := func(k int) float64 { return float64(cpu1[k]-cpu0[k]) / float64(time.Microsecond) / float64(n) }
	st.set(b, row{
		metric:   "echo: CPU of the middle process per round trip",
		vals:     [nPaths]string{"-", fmt.Sprintf("%.0f µs", us(relayed)), fmt.Sprintf("%.0f µs", us(proxied))},
		compared: st.compared(proxied, relayed), ratio: fmt.Sprintf("%.2fx (totals)", ratioOf(us(proxied), us(relayed))), target: "-",
		samples: fmt.Sprintf("%d round trips; utime+stime from /proc", n),
	})
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
func BenchmarkSetupFirstByte(b *testing.B) { perSpec(b, setup) }

func setup(b *testing.B, st stack) {
	// The default -benchtime gives about 50 sessions a path, too few for a
	// stable median on a shared machine.
	rounds := max(b.N, *setupRounds)
	var samples [nPaths][]time.Duration
	var ratios []float64
	var cpu [nPaths]time.Duration
	b.ResetTimer()
	for i := range rounds {
		var got [nPaths]time.Duration
		for _, k := range order(i) {
			c0 := st.cpu(b)
			d, err := setupOnce(st.paths[k])
			if err != nil {
				b.Fatalf("%s: session %d: %v", st.names[k], i, err)
			}
			cpu[k] += st.cpu(b)[k] - c0[k]
			got[k] = d
			samples[k] = append(samples[k], d)
		}
		ratios = append(ratios, ratioOf(float64(got[proxied]), float64(got[direct])))
	}
	b.StopTimer()
	var p50 [nPaths]time.Duration
	for k := range nPaths {
		p50[k] = percentile(samples[k], 50)
		b.ReportMetric(float64(p50[k])/1e3, st.names[k]+"-p50-µs")
	}
	r, med := ratioSummary(ratios)
	b.ReportMetric(med, st.compared(proxied, direct))
	st.set(b, row{
		metric:   "session setup to first byte, p50",
		vals:     [nPaths]string{ms(p50[0]), ms(p50[1]), ms(p50[2])},
		compared: st.compared(proxied, direct), ratio: r, target: atMost(st.t.setup), pass: med <= st.t.setup,
		samples: fmt.Sprintf("%d rounds", rounds),
	})
	perSession := func(k int) string {
		return fmt.Sprintf("%.0f µs", float64(cpu[k])/float64(time.Microsecond)/float64(rounds))
	}
	st.set(b, row{
		metric:   "setup: CPU of the middle process per session",
		vals:     [nPaths]string{"-", perSession(relayed), perSession(proxied)},
		compared: st.compared(proxied, relayed), ratio: fmt.Sprintf("%.2fx (totals)", ratioOf(float64(cpu[proxied]), float64(cpu[relayed]))), target: "-",
		samples: fmt.Sprintf("%d rounds; utime+stime from /proc, 10 ms ticks", rounds),
	})
}

// BenchmarkIdleSessionMemory: resident memory per idle session of the
// proxy and of the relay, with -idle.sessions open at once, for each
// group. Target: the proxy at most 128 KiB a WebSocket session (what it
// speaks to a real API server). Each run is one measurement, whatever b.N.
func BenchmarkIdleSessionMemory(b *testing.B) {
	e := newEnv(b)
	for _, s := range specs {
		b.Run(s.name(), func(b *testing.B) { idleMemory(b, e, s) })
	}
}

// idleFigures is one process's growth with the idle sessions open.
type idleFigures struct {
	rssKiB, heapKiB, goroutines, fds float64 // per session
	opened                           time.Duration
}

// idleDone keeps each sub-benchmark's figures (a run shorter than
// -benchtime is called again with a larger b.N, and one measurement is
// all there is to report), and relayDone the relay's for each transport:
// the same relay serves both WebSocket groups.
var (
	idleDone  = map[string]idleFigures{}
	relayDone = map[exec.Transport]idleFigures{}
)

func idleMemory(b *testing.B, e *env, s spec) {
	n := *idleSessions
	prx, ok := idleDone[b.Name()]
	if !ok {
		paths, p := e.paths(b, s)
		if _, ok := relayDone[s.tr]; !ok {
			rel, err := idleRun(b, e, paths[relayed], n, e.relay, nil)
			if err != nil {
				b.Fatalf("relay: %v", err)
			}
			relayDone[s.tr] = rel
		}
		var err error
		if prx, err = idleRun(b, e, paths[proxied], n, p.Proxy, p); err != nil {
			b.Fatalf("proxy: %v", err)
		}
		idleDone[b.Name()] = prx
	}
	rel := relayDone[s.tr]
	b.ReportMetric(prx.rssKiB, "KiB/session")
	b.ReportMetric(prx.heapKiB, "heap-KiB/session")
	b.ReportMetric(prx.goroutines, "goroutines/session")
	b.ReportMetric(prx.fds, "fds/session")
	b.ReportMetric(rel.rssKiB, "relay-KiB/session")
	st := stack{group: s.group, gate: s.gate, names: pathNames}
	var limit float64
	if s.tr == exec.TransportWebSocket {
		limit = 128
	}
	kib := func(v float64) string { return fmt.Sprintf("%.0f KiB", v) }
	target := "-"
	if limit > 0 {
		target = fmt.Sprintf("<= %.0f KiB", limit)
	}
	st.set(b, row{
		metric:   "RSS per idle session",
		vals:     [nPaths]string{"-", kib(rel.rssKiB), kib(prx.rssKiB)},
		compared: "proxy/relay", ratio: fmt.Sprintf("%.2fx", ratioOf(prx.rssKiB, rel.rssKiB)),
		target: target, pass: prx.rssKiB <= limit,
		samples: fmt.Sprintf("%d open; proxy Go heap in use %.0f KiB a session", n, prx.heapKiB),
	})
	g := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	st.set(b, row{
		metric:   "goroutines / fds per idle session",
		vals:     [nPaths]string{"-", "3 / " + g(rel.fds), g(prx.goroutines) + " / " + g(prx.fds)},
		compared: "-", ratio: "-", target: "-",
		samples: fmt.Sprintf("%d open; the relay has no /metrics: 3 goroutines a connection by construction", n),
	})
}
