package bench

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
)

var (
	bulkBytes    = flag.Int64("bulk.bytes", 64<<20, "stdout bytes per bulk-throughput session")
	bulkRounds   = flag.Int("bulk.rounds", 8, "least direct/proxy pairs of bulk sessions, whatever b.N")
	setupRounds  = flag.Int("setup.sessions", 200, "least direct/proxy pairs of setup sessions, whatever b.N")
	idleSessions = flag.Int("idle.sessions", 1000, "idle sessions held open for the memory measurement")
	idleParallel = flag.Int("idle.parallel", 16, "idle sessions opened at once while building up the set")
	enforce      = flag.Bool("targets.enforce", false, "fail a benchmark whose result misses its target (the table always says)")
)

// order alternates which path goes first (ABBA...), so that drift in the
// machine's load hits both paths alike.
func order(i int) [2]int {
	if i%2 == 0 {
		return [2]int{0, 1}
	}
	return [2]int{1, 0}
}

// pair is a backend with a direct path and a proxy path to it; index 0 is
// direct, 1 is proxy.
type pair struct {
	e     *env
	p     *proxyProc
	paths [2]path
}

func newPair(tb testing.TB) pair {
	tb.Helper()
	e := newEnv(tb)
	p := e.startProxy(tb, e.transport)
	results.note("backend: cmd/local-exec-backend (upstream kubelet streaming server, real processes) in its own process, serving TLS")
	results.note(fmt.Sprintf("direct: package exec (client-go %s executor) straight to the backend; %s is what exec's auto mode picks there", e.transport, e.transport))
	results.note(fmt.Sprintf("proxy:  client-go WebSocket executor (v5) -> k8s-ws-proxy (built without -race, --exec-transport=%s) -> the backend", e.transport))
	return pair{e: e, p: p, paths: [2]path{directPath{e}, p.path(e)}}
}

func check(b *testing.B, metric string, ok bool) {
	if !ok && *enforce {
		b.Errorf("%s misses its target", metric)
	}
}

// BenchmarkBulkStdout: stdout throughput without a tty. Target: proxy at
// least 0.9x direct.
func BenchmarkBulkStdout(b *testing.B) {
	pr := newPair(b)
	size := *bulkBytes
	var spent [2]time.Duration
	// One 64 MiB pair already exceeds the default -benchtime, so b.N alone
	// would often give a single sample.
	rounds := max(b.N, *bulkRounds)
	b.ResetTimer()
	for i := range rounds {
		for _, k := range order(i) {
			d, err := bulkOnce(pr.paths[k], size)
			if err != nil {
				b.Fatalf("%s: %v", pr.paths[k].name(), err)
			}
			spent[k] += d
		}
	}
	b.StopTimer()
	var mbps [2]float64
	for k := range mbps {
		mbps[k] = float64(size) * float64(rounds) / spent[k].Seconds() / 1e6
	}
	r := ratioOf(mbps[1], mbps[0])
	b.ReportMetric(mbps[0], "direct-MB/s")
	b.ReportMetric(mbps[1], "proxy-MB/s")
	b.ReportMetric(r, "ratio")
	const metric = "bulk stdout, no tty (throughput)"
	results.set(row{
		metric: metric, direct: fmt.Sprintf("%.0f MB/s", mbps[0]), proxy: fmt.Sprintf("%.0f MB/s", mbps[1]),
		ratio: fmt.Sprintf("%.2fx", r), target: ">= 0.90x", pass: r >= 0.9,
		samples: fmt.Sprintf("%d x %d MiB each", rounds, size>>20),
	})
	check(b, metric, r >= 0.9)
}

// BenchmarkTTYEcho: one byte typed into a tty and echoed by the process,
// round trip. Targets: p50 at most 1.5x direct, p99 at most 2x.
func BenchmarkTTYEcho(b *testing.B) {
	pr := newPair(b)
	var sess [2]*echoSession
	for k, p := range pr.paths {
		s, err := openEcho(p)
		if err != nil {
			b.Fatal(err)
		}
		sess[k] = s
		b.Cleanup(func() { s.close() })
	}
	samples := [2][]time.Duration{make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)}
	b.ResetTimer()
	for i := range b.N {
		c := byte('a' + i%26)
		for _, k := range order(i) {
			d, err := sess[k].roundTrip(c)
			if err != nil {
				b.Fatalf("%s: round trip %d: %v", pr.paths[k].name(), i, err)
			}
			samples[k] = append(samples[k], d)
		}
	}
	b.StopTimer()
	for k, s := range sess {
		if err := s.close(); err != nil {
			b.Fatalf("%s: closing the echo session: %v", pr.paths[k].name(), err)
		}
	}
	for _, q := range []struct {
		p      float64
		target float64
	}{{50, 1.5}, {99, 2}} {
		d, p := percentile(samples[0], q.p), percentile(samples[1], q.p)
		r := ratioOf(float64(p), float64(d))
		b.ReportMetric(float64(d)/1e3, fmt.Sprintf("direct-p%.0f-µs", q.p))
		b.ReportMetric(float64(p)/1e3, fmt.Sprintf("proxy-p%.0f-µs", q.p))
		b.ReportMetric(r, fmt.Sprintf("ratio-p%.0f", q.p))
		metric := fmt.Sprintf("tty 1-byte echo round trip, p%.0f", q.p)
		results.set(row{
			metric: metric, direct: ms(d), proxy: ms(p),
			ratio: fmt.Sprintf("%.2fx", r), target: fmt.Sprintf("<= %.1fx", q.target), pass: r <= q.target,
			samples: fmt.Sprint(b.N),
		})
		check(b, metric, r <= q.target)
	}
}

// BenchmarkSetupFirstByte: from dialling (token already minted) to the
// first byte of `echo ok`. Target: p50 at most 1.3x direct.
func BenchmarkSetupFirstByte(b *testing.B) {
	pr := newPair(b)
	// The default -benchtime gives about 50 sessions a path, too few for a
	// stable median on a shared machine.
	rounds := max(b.N, *setupRounds)
	samples := [2][]time.Duration{make([]time.Duration, 0, rounds), make([]time.Duration, 0, rounds)}
	b.ResetTimer()
	for i := range rounds {
		for _, k := range order(i) {
			d, err := setupOnce(pr.paths[k])
			if err != nil {
				b.Fatalf("%s: session %d: %v", pr.paths[k].name(), i, err)
			}
			samples[k] = append(samples[k], d)
		}
	}
	b.StopTimer()
	d50, p50 := percentile(samples[0], 50), percentile(samples[1], 50)
	d99, p99 := percentile(samples[0], 99), percentile(samples[1], 99)
	r := ratioOf(float64(p50), float64(d50))
	b.ReportMetric(float64(d50)/1e3, "direct-p50-µs")
	b.ReportMetric(float64(p50)/1e3, "proxy-p50-µs")
	b.ReportMetric(r, "ratio-p50")
	b.ReportMetric(ratioOf(float64(p99), float64(d99)), "ratio-p99")
	const metric = "session setup to first byte, p50"
	results.set(row{
		metric: metric, direct: ms(d50), proxy: ms(p50),
		ratio: fmt.Sprintf("%.2fx", r), target: "<= 1.3x", pass: r <= 1.3,
		samples: fmt.Sprint(rounds),
	})
	check(b, metric, r <= 1.3)
}

// BenchmarkIdleSessionMemory: the proxy's resident memory per idle
// session, with -idle.sessions open at once, for each exec transport the
// proxy can use toward the backend. Target: at most 256 KiB per session.
// Each run is one measurement, whatever b.N.
func BenchmarkIdleSessionMemory(b *testing.B) {
	e := newEnv(b)
	transports := []exec.Transport{e.transport}
	if e.transport != exec.TransportWebSocket {
		// What the proxy uses toward a real API server (v5 there, v4 to
		// localexec).
		transports = append(transports, exec.TransportWebSocket)
	}
	for _, tr := range transports {
		b.Run("backend="+string(tr), func(b *testing.B) { idleMemory(b, e, tr) })
	}
}

func idleMemory(b *testing.B, e *env, tr exec.Transport) {
	p := e.startProxy(b, tr)
	pp := p.path(e)
	n := *idleSessions
	// What the first sessions allocate once (the exec client, pools,
	// connections kept alive toward the backend) is not a per-session cost.
	warm, err := openIdleSessions(pp, *idleParallel, *idleParallel)
	if err != nil {
		b.Fatal(err)
	}
	if err := closeIdleSessions(warm); err != nil {
		b.Fatal(err)
	}
	g0, err := p.settledGoroutines(30 * time.Second)
	if err != nil {
		b.Fatal(err)
	}
	rss0, err := p.RSSKiB()
	if err != nil {
		b.Fatal(err)
	}
	fd0, _ := p.FDs()
	heap0, _ := p.Metric("go_memstats_heap_inuse_bytes")
	procs0 := len(e.backend.PIDs())

	b.ResetTimer()
	start := time.Now()
	sessions, err := openIdleSessions(pp, n, *idleParallel)
	if err != nil {
		b.Fatal(err)
	}
	opened := time.Since(start)
	b.StopTimer()
	rss1, err := p.RSSKiB()
	if err != nil {
		b.Fatal(err)
	}
	g1, _ := p.Goroutines()
	fd1, _ := p.FDs()
	heap1, _ := p.Metric("go_memstats_heap_inuse_bytes")
	procs1 := len(e.backend.PIDs())
	if err := closeIdleSessions(sessions); err != nil {
		b.Fatalf("closing idle sessions: %v", err)
	}
	g2, err := p.WaitGoroutines(g0, 2*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	if g2 > g0 {
		b.Errorf("proxy goroutines: %d before, %d with %d sessions open, still %d 2 min after they closed", g0, g1, n, g2)
	}
	if procs1-procs0 < n {
		b.Fatalf("backend ran %d more processes with the sessions open, want at least %d", procs1-procs0, n)
	}

	per := float64(rss1-rss0) / float64(n)
	heapPer := (heap1 - heap0) / 1024 / float64(n)
	b.ReportMetric(per, "KiB/session")
	b.ReportMetric(heapPer, "heap-KiB/session")
	b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/session")
	b.ReportMetric(float64(fd1-fd0)/float64(n), "fds/session")
	b.Logf("backend=%s: %d idle sessions opened in %v; proxy RSS %d -> %d KiB, goroutines %d -> %d -> %d, fds %d -> %d",
		tr, n, opened.Round(time.Millisecond), rss0, rss1, g0, g1, g2, fd0, fd1)
	metric := fmt.Sprintf("proxy RSS per idle session (proxy->backend %s)", tr)
	results.set(row{
		metric: metric, direct: "-", proxy: fmt.Sprintf("%.0f KiB", per), ratio: "-",
		target: "<= 256 KiB", pass: per <= 256,
		samples: fmt.Sprintf("%d open; each %.0f KiB Go heap in use, %.1f goroutines, %.1f fds",
			n, heapPer, float64(g1-g0)/float64(n), float64(fd1-fd0)/float64(n)),
	})
	check(b, metric, per <= 256)
}

// settledGoroutines waits until the proxy's goroutine count reads the
// same three times in a row, 100 ms apart (sessions end asynchronously in
// another process), and returns it.
func (p *proxyProc) settledGoroutines(within time.Duration) (int, error) {
	last, same := -1, 0
	err := poll.Until(context.Background(), 100*time.Millisecond, within, func(context.Context) error {
		n, err := p.Goroutines()
		if err != nil {
			last, same = -1, 0
			return err // a busy proxy answering late is retried until the deadline
		}
		if n == last {
			same++
		} else {
			last, same = n, 1
		}
		if same < 3 {
			return fmt.Errorf("%d goroutines, %d reading(s) in a row", n, same)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("proxy goroutines did not settle within %v: %w", within, err)
	}
	return last, nil
}
