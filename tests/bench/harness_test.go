package bench

import (
	"bytes"
	"context"
	"math"
	"testing"
	"time"
)

// TestHarness runs each kind of session the benchmarks and the load test
// use once through every path (direct, the bare relay, the proxy) for
// each group of the local backend, and checks what the measurements rest
// on: byte-exact output, the tty echo, the CPU time and the proxy's RSS,
// descriptor and goroutine readings, goroutines returning to their count
// once the sessions are gone, and that the frame-relay and demux groups
// measure two different paths (the demux path runs client-go's stream
// copiers: more goroutines per session).
func TestHarness(t *testing.T) {
	e := newEnv(t)
	perSession := map[string]float64{} // group: proxy goroutines per idle session
	for _, s := range specs {
		t.Run(s.name(), func(t *testing.T) { perSession[s.group] = harness(t, e, s) })
	}
	relay, demux := perSession[groupWS], perSession[groupDemux]
	t.Logf("proxy goroutines per idle session: frame relay %.1f, demux %.1f", relay, demux)
	if relay <= 0 || relay >= demux {
		t.Errorf("proxy goroutines per idle session: frame relay %.1f, demux %.1f: want fewer, but above 0, on the relay", relay, demux)
	}
}

// harness returns the proxy's goroutines per idle session.
func harness(t *testing.T, e *env, s spec) float64 {
	paths, p := e.paths(t, s)
	var perSession float64
	// The proxy keeps HTTP connections to the backend alive after its pod
	// lookups (2 goroutines each): the baseline is taken once a warm-up
	// as concurrent as the sessions below has filled that pool.
	if err := warmUp(paths[proxied], 3); err != nil {
		t.Fatal(err)
	}
	g0, err := p.settledGoroutines(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := seqOutput(20000)
	for k, pt := range paths {
		t.Run(pt.name(), func(t *testing.T) {
			var out bytes.Buffer
			run, err := pt.prepare(session{Command: []string{"seq", "1", "20000"}, Stdout: &out})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := run(ctx); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("seq output: %d bytes, want %d byte-exact", out.Len(), len(want))
			}
			// The middle process's CPU time moves with what passes through
			// it. A bare relay moves 8 MiB through TLS in under one 10 ms
			// clock tick on a quiet machine (seen: 10ms before and after), so
			// 64 MiB: several ticks for every path.
			mid := []int{e.backend.proc.Process().Pid, e.relay.Process().Pid, p.Process().Pid}[k]
			c0, err := cpuTime(mid)
			if err != nil {
				t.Fatal(err)
			}
			s0, err := syscalls(mid)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bulkOnce(pt, zeros(64<<20), 64<<20); err != nil {
				t.Fatal(err)
			}
			if c1, err := cpuTime(mid); err != nil || c1 <= c0 {
				t.Fatalf("CPU time of the %s's middle process: %v before 64 MiB, %v after (%v)", pt.name(), c0, c1, err)
			}
			// At most 16 KiB a TLS record: 64 MiB is at least 4096 reads.
			if s1, err := syscalls(mid); err != nil || s1-s0 < 4096 {
				t.Fatalf("system calls of the %s's middle process: %d before 64 MiB, %d after (%v)", pt.name(), s0, s1, err)
			}
			if d, err := setupOnce(pt); err != nil || d <= 0 {
				t.Fatalf("setup: %v, %v", d, err)
			}
			echo, err := openEcho(pt)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []byte("hi\x03") { // ^C too: raw mode passes it through
				if _, err := echo.roundTrip(c); err != nil {
					echo.close()
					t.Fatal(err)
				}
			}
			if err := echo.close(); err != nil {
				t.Fatal(err)
			}
			var g1 int
			if k == proxied {
				if g1, err = p.settledGoroutines(30 * time.Second); err != nil {
					t.Fatal(err)
				}
			}
			before := e.backend.children()
			idle, err := openIdleSessions(pt, 3, 3)
			if err != nil {
				t.Fatal(err)
			}
			if k == proxied {
				g2, err := p.settledGoroutines(30 * time.Second)
				if err != nil {
					closeIdleSessions(idle)
					t.Fatal(err)
				}
				perSession = float64(g2-g1) / 3
			}
			if n := newChildren(before, e.backend.children()); n != 3 {
				t.Errorf("3 idle sessions open, %d new backend processes", n)
			}
			if err := closeIdleSessions(idle); err != nil {
				t.Fatal(err)
			}
		})
	}
	rss, err := p.RSSKiB()
	if err != nil || rss < 1024 {
		t.Fatalf("proxy RSS %d KiB, %v: not a plausible Go process", rss, err)
	}
	if fds, err := p.FDs(); err != nil || fds < 3 {
		t.Fatalf("proxy fds %d, %v", fds, err)
	}
	if g, err := p.WaitGoroutines(g0, 30*time.Second); err != nil || g > g0 {
		t.Fatalf("proxy goroutines %d before the sessions, %d 30s after (%v)", g0, g, err)
	}
	return perSession
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {90, 9}, {99, 10}, {100, 10}, {1, 1}} {
		if got := percentile(ds, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}

func TestQuartiles(t *testing.T) {
	for _, c := range []struct {
		xs        []float64
		q1, m, q3 float64
	}{
		{[]float64{1}, 1, 1, 1},
		{[]float64{4, 1, 3, 2}, 1.75, 2.5, 3.25},
		{[]float64{5, 1, 4, 2, 3}, 2, 3, 4},
	} {
		q1, m, q3 := quartiles(c.xs)
		if q1 != c.q1 || m != c.m || q3 != c.q3 {
			t.Errorf("quartiles(%v) = %v, %v, %v; want %v, %v, %v", c.xs, q1, m, q3, c.q1, c.m, c.q3)
		}
	}
	if s, med := ratioSummary([]float64{0.9, 1.1, 1.0}); s != "1.00x [0.95–1.05]" || med != 1 {
		t.Errorf("ratioSummary = %q, %v", s, med)
	}
	// What the proxy adds over what the relay adds.
	for _, c := range []struct{ p, r, want float64 }{{60, 50, 1.2}, {10, 0, math.Inf(1)}, {0, 0, 1}, {-5, 50, -0.1}} {
		if got := excess(c.p, c.r); got != c.want {
			t.Errorf("excess(%v, %v) = %v, want %v", c.p, c.r, got, c.want)
		}
	}
}
