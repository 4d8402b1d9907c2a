//go:build load

package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
)

var (
	loadDuration = flag.Duration("load.duration", 5*time.Minute, "how long new sessions keep being started")
	loadSessions = flag.Int("load.sessions", 1000, "concurrent sessions: each worker runs one session after another")
	loadHold     = flag.Duration("load.hold", 5*time.Second, "mean time a session stays open after its first echo (uniform in [0, 2x))")
	loadMaxSeq   = flag.Int("load.maxseq", 5000, "each session ends with `seq 1 N`, N uniform in [1, maxseq]")
	loadRamp     = flag.Duration("load.ramp", 10*time.Second, "workers start spread over this long")
)

// TestLoad runs -load.sessions concurrent sessions through the proxy for
// -load.duration, each worker starting a new session as soon as its last
// one ended (churn). Every session is `cat && exec seq 1 N`: it echoes a
// random nonce, stays open for a random time, then gets stdin EOF (v5
// CLOSE, half-closed toward the backend) and prints seq's output; the
// client checks its whole output byte for byte. It reports sessions/s, the
// setup-to-first-byte latencies, and the proxy's RSS, descriptors and
// goroutines; it fails on any session error or output mismatch, or when
// the proxy's goroutines do not come back to their count at the start.
//
// Build-tagged (go test -tags load -run TestLoad ./tests/bench/, or make
// load): it is not part of make test.
func TestLoad(t *testing.T) {
	e := newEnv(t)
	n := *loadSessions
	// SPDY: the sessions need stdin half-close, which toward this backend
	// only SPDY offers (WebSocket v4 cannot half-close).
	const transport = exec.TransportSPDY
	// The limits leave room for the test's own clients, which the
	// saturated machine makes look like stalled ones (setup p50 18-32 s
	// here): n connections may all be in their TLS handshake at once,
	// which the default 256 pending connections would shed (12 evictions
	// in a 2-minute run), and a handshake may take longer than the default
	// 10 s --read-header-timeout, which net/http also applies to the TLS
	// handshake (22 sessions cut before their echo in a 3-minute run);
	// the backend's SPDY handshakes, too, took longer than 30 s (39
	// sessions failed at a 30 s --exec-handshake-timeout). Those guards
	// have their own tests (TestPendingConnectionsCapped,
	// TestSlowlorisHeaders, exec's TestHandshakeThatNeverEnds); what this
	// test asserts is that every session it opens ends truthfully.
	// Keep every close line that is not a plain exit: a failure names its
	// sessions' reasons and errors as the proxy logged them.
	unusual := func(l string) bool {
		return strings.Contains(l, `"event":"close"`) && !strings.Contains(l, `"reason":"exited"`)
	}
	p := e.startProxyKeeping(t, transport, unusual, "--max-sessions", strconv.Itoa(n+64), "--max-pending-connections", strconv.Itoa(n+64),
		"--read-header-timeout", "2m", "--exec-handshake-timeout", "2m")
	pp := p.path(e)

	// Warm-up as concurrent as the ramp will be at first: the proxy keeps
	// HTTP connections to the backend alive after its pod lookups, and the
	// pool they fill belongs to the baseline, not to a leak.
	warmN := min(n, 64)
	warm, err := openIdleSessions(pp, warmN, warmN)
	if err != nil {
		t.Fatal(err)
	}
	if err := closeIdleSessions(warm); err != nil {
		t.Fatal(err)
	}
	g0, err := p.settledGoroutines(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rss0, _ := p.RSSKiB()
	fd0, _ := p.FDs()

	var (
		mu        sync.Mutex
		setups    []time.Duration
		failures  []string
		failed    atomic.Int64
		completed atomic.Int64
		inFlight  atomic.Int64
		outBytes  atomic.Int64
	)
	kinds := map[string]int{} // failures by their message, numbers blanked
	fail := func(err error) {
		failed.Add(1)
		mu.Lock()
		if len(failures) < 20 {
			failures = append(failures, err.Error())
		}
		kinds[digits.ReplaceAllString(err.Error(), "N")]++
		mu.Unlock()
	}

	// The monitor samples the proxy once a second: peaks and the
	// concurrency actually reached.
	stopMon := make(chan struct{})
	monDone := make(chan struct{})
	var rssPeak int64
	var fdPeak, gPeak, inFlightPeak, activePeak int
	var inFlightSum, activeSum, monSamples int64
	go func() {
		defer close(monDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopMon:
				return
			case <-tick.C:
			}
			if v, err := p.RSSKiB(); err == nil {
				rssPeak = max(rssPeak, v)
			}
			if v, err := p.FDs(); err == nil {
				fdPeak = max(fdPeak, v)
			}
			if v, err := p.Goroutines(); err == nil {
				gPeak = max(gPeak, v)
			}
			if v, err := p.Metric("k8s_ws_proxy_sessions_active"); err == nil {
				activePeak = max(activePeak, int(v))
				activeSum += int64(v)
			}
			f := int(inFlight.Load())
			inFlightPeak = max(inFlightPeak, f)
			inFlightSum += int64(f)
			monSamples++
		}
	}()

	start := time.Now()
	deadline := start.Add(*loadDuration)
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			// Pacing the start of workers (not synchronisation): a
			// thundering herd of n dials would measure the herd.
			if d := time.Duration(int64(*loadRamp) * int64(w) / int64(n)); d > 0 {
				<-time.After(d)
			}
			for time.Now().Before(deadline) {
				inFlight.Add(1)
				setup, nbytes, err := loadSession(pp)
				inFlight.Add(-1)
				if err != nil {
					fail(err)
					// Pacing, as a real client backs off after a
					// failure: an immediate retry of every failed
					// session turns an overloaded machine's failures
					// into a storm of new TLS handshakes.
					<-time.After(time.Second)
					continue
				}
				completed.Add(1)
				outBytes.Add(int64(nbytes))
				mu.Lock()
				setups = append(setups, setup)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopMon)
	<-monDone

	rss1, _ := p.RSSKiB()
	g1, gerr := p.WaitGoroutines(g0, 60*time.Second)
	fd1, _ := p.FDs()
	procsLeft := len(e.backend.PIDs())

	done := completed.Load()
	var avgInFlight, avgActive float64
	if monSamples > 0 {
		avgInFlight = float64(inFlightSum) / float64(monSamples)
		avgActive = float64(activeSum) / float64(monSamples)
	}
	report := fmt.Sprintf(`
k8s-ws-proxy load test: %d workers for %v (ramp %v, hold mean %v, seq up to %d), proxy --exec-transport=%s
  sessions completed      %d (%.1f/s), failed %d, %.1f MB of checked output
  sessions in flight      mean %.0f, peak %d (client side, dialling included; sampled each second)
  proxy active sessions   mean %.0f, peak %d (bridged, from /metrics)
  setup to first byte     p50 %s, p99 %s, max %s
  proxy RSS               start %d KiB, peak %d KiB, end %d KiB
  proxy fds               start %d, peak %d, end %d
  proxy goroutines        start %d, peak %d, end %d
  backend processes left  %d
  proxy counters          %s
`, n, *loadDuration, *loadRamp, *loadHold, *loadMaxSeq, transport,
		done, float64(done)/elapsed.Seconds(), failed.Load(), float64(outBytes.Load())/1e6,
		avgInFlight, inFlightPeak, avgActive, activePeak,
		ms(percentile(setups, 50)), ms(percentile(setups, 99)), ms(percentile(setups, 100)),
		rss0, rssPeak, rss1, fd0, fdPeak, fd1, g0, gPeak, g1, procsLeft, proxyCounters(p))
	fmt.Fprint(os.Stdout, report)

	if failed.Load() > 0 {
		byKind := countedKinds(kinds)
		t.Errorf("%d sessions failed; by kind:\n%s  first errors:\n%s  the proxy's close lines by reason and error:\n%s",
			failed.Load(), joinLines(byKind), joinLines(failures), joinLines(closeReasons(p.Kept())))
	}
	if done == 0 {
		t.Error("no session completed")
	}
	if gerr != nil {
		t.Errorf("reading proxy goroutines: %v", gerr)
	} else if g1 > g0 {
		t.Errorf("proxy goroutines: %d at the start, still %d 60s after the last session", g0, g1)
	}
	if left, err := e.waitBackendProcesses(massDropBound); err != nil {
		t.Errorf("after the churn: %v (%d left)", err, left)
	}
	massDisconnect(t, e, p, pp, min(n, 2000))
}

// massDropBound is how long, at most, the backend may run a process after
// its session's client is gone (issue 11: 2,000 SPDY sessions dropped at
// once left 308 processes alive 60 s later). The proxy resets its upstream
// connections at once; what is left is the backend's teardown. Measured on
// the 2-core test machine at load average ~20: 2,000 sessions gone after
// 10.4 s (58 left after 1 s), 200 after 2.8 s; the bound leaves about three
// times that for a loaded machine.
const massDropBound = 30 * time.Second

// massDisconnect opens n idle sessions (`cat`), drops all their clients
// at once and checks the aftermath (dropAll).
func massDisconnect(t *testing.T, e *env, p *proxyProc, pp path, n int) {
	t.Helper()
	ss, err := openIdleSessions(pp, n, 64)
	if err != nil {
		t.Fatalf("opening %d sessions to drop: %v", n, err)
	}
	dropAll(t, e, p, ss, "idle")
}

// dropAll drops the clients of ss at once (each client closes its
// connection, stdin left open) and checks that every backend process is
// gone within massDropBound and that the proxy then counts no active
// session.
func dropAll(t *testing.T, e *env, p *proxyProc, ss []*idleSession, kind string) {
	t.Helper()
	n := len(ss)
	if got := len(e.backend.PIDs()); got < n {
		t.Errorf("%d sessions open but the backend runs %d processes", n, got)
	}
	start := time.Now()
	for _, s := range ss {
		s.cancel() // client-go closes the connection; stdin stays open
	}
	// A timeline of what is left, for the report: processes and the
	// proxy's active sessions at 1, 2, 5, 10 and 20 s.
	var timeline []string
	stopTL := make(chan struct{})
	tlDone := make(chan struct{})
	go func() {
		defer close(tlDone)
		for _, at := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 20 * time.Second} {
			select {
			case <-stopTL:
				return
			case <-time.After(time.Until(start.Add(at))):
			}
			active, _ := p.Metric("k8s_ws_proxy_sessions_active")
			timeline = append(timeline, fmt.Sprintf("%v: %d processes, %v active", at, len(e.backend.PIDs()), active))
		}
	}()
	left, err := e.waitBackendProcesses(massDropBound)
	gone := time.Since(start)
	close(stopTL)
	<-tlDone
	// The clients' own teardown (client-go returning) is not what is
	// measured; it ends before the next check.
	for _, s := range ss {
		<-s.done
	}
	if len(timeline) > 0 {
		fmt.Fprintf(os.Stdout, "  mass disconnect (%s)  left after %s\n", kind, strings.Join(timeline, "; "))
	}
	active, aerr := p.waitActive(0, massDropBound-min(gone, massDropBound))
	fmt.Fprintf(os.Stdout, "  mass disconnect (%s)  %d sessions dropped at once: processes gone after %v (%d left), proxy active sessions %v after %v\n",
		kind, n, gone.Round(time.Millisecond), left, active, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Errorf("mass disconnect of %d %s sessions: %v (%d left)", n, kind, err, left)
	}
	if aerr != nil {
		t.Errorf("mass disconnect of %d %s sessions: %v", n, kind, aerr)
	}
}

// waitActive polls the proxy's active-sessions gauge until it reads want.
func (p *proxyProc) waitActive(want float64, within time.Duration) (float64, error) {
	deadline := time.Now().Add(within)
	for {
		v, err := p.Metric("k8s_ws_proxy_sessions_active")
		if err == nil && v == want {
			return v, nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return v, fmt.Errorf("reading the active-sessions gauge: %w", err)
			}
			return v, fmt.Errorf("the proxy still counts %v active sessions (want %v) once the processes were gone and %v more passed", v, want, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitBackendProcesses polls the backend's children (another process's:
// no event to wait on) until none is left or within has passed.
func (e *env) waitBackendProcesses(within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	for {
		left := len(e.backend.PIDs())
		if left == 0 {
			return 0, nil
		}
		if time.Now().After(deadline) {
			return left, fmt.Errorf("backend processes still running %v after their sessions ended", within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// loadSession runs one session of the load test and checks its output.
// It returns the time from dial to the first byte (the nonce's echo).
func loadSession(pp path) (time.Duration, int, error) {
	var nb [8]byte
	rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:]) + "\n"
	n := 1 + mrand.IntN(*loadMaxSeq)
	hold := time.Duration(mrand.Int64N(int64(2*(*loadHold)) + 1))
	want := append([]byte(nonce), seqOutput(n)...)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute+2*(*loadHold))
	defer cancel()
	stdinR, stdinW := io.Pipe()
	out := &waitWriter{want: []byte(nonce), seen: make(chan struct{})}
	fb := newFirstByte()
	run, err := pp.prepare(session{
		Command: []string{"sh", "-c", fmt.Sprintf("cat && exec seq 1 %d", n)},
		Stdin:   stdinR, Stdout: io.MultiWriter(fb, out),
	})
	if err != nil {
		return 0, 0, err
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		err := run(ctx)
		stdinW.Close()
		done <- err
	}()
	go stdinW.Write([]byte(nonce))
	select {
	case <-out.seen:
	case err := <-done:
		return 0, 0, fmt.Errorf("session ended before its echo: %v", err)
	}
	at, _ := fb.result()
	setup := at.Sub(start)
	if hold > 0 {
		select {
		case <-time.After(hold):
		case err := <-done:
			return 0, 0, fmt.Errorf("session ended while held open: %v", err)
		}
	}
	// EOF: client-go sends v5 CLOSE for stdin; cat ends, seq runs.
	stdinW.Close()
	if err := <-done; err != nil {
		return 0, 0, fmt.Errorf("seq 1 %d: %v", n, err)
	}
	_, got := fb.result()
	if !bytes.Equal(got, want) {
		return 0, 0, fmt.Errorf("seq 1 %d: %d bytes of output, want %d byte-exact (first diff at %d)", n, len(got), len(want), firstDiff(got, want))
	}
	return setup, len(got), nil
}

var (
	digits     = regexp.MustCompile(`[0-9]+`)
	scopeLabel = regexp.MustCompile(`otel_scope_[a-z_]+="[^"]*",?`)
)

// proxyCounters are the proxy's counters of what it closed or refused
// before an upgrade (connections evicted at --max-pending-connections,
// refusals by reason: too_many_admissions at --max-admissions among them)
// and of how sessions ended, by result: when a session failed they say on
// which side of the upgrade, and why.
func proxyCounters(p *proxyProc) string {
	text, err := p.Metrics()
	if err != nil {
		return err.Error()
	}
	var out []string
	for l := range strings.Lines(text) {
		for _, name := range []string{"k8s_ws_proxy_connections_evicted_total", "k8s_ws_proxy_rejections_total", "k8s_ws_proxy_sessions_total"} {
			if strings.HasPrefix(l, name+"{") {
				out = append(out, strings.TrimPrefix(scopeLabel.ReplaceAllString(strings.TrimSpace(l), ""), "k8s_ws_proxy_"))
			}
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "; ")
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func joinLines(s []string) string {
	var b bytes.Buffer
	for _, l := range s {
		b.WriteString("  ")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// closeReasons counts close lines by their reason and error (numbers
// blanked).
func closeReasons(lines []string) []string {
	kinds := map[string]int{}
	for _, l := range lines {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		kinds[digits.ReplaceAllString(fmt.Sprintf("%v: %v", m["reason"], m["error"]), "N")]++
	}
	return countedKinds(kinds)
}

// countedKinds is one sorted line a kind: its count, then the kind.
func countedKinds(kinds map[string]int) []string {
	var out []string
	for k, c := range kinds {
		out = append(out, fmt.Sprintf("%5d  %s", c, k))
	}
	slices.Sort(out)
	return out
}
