package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
)

// ProxyOptions says how StartProxy runs the binary.
type ProxyOptions struct {
	Bin  string
	Args []string // everything after the binary, "serve" included
	Env  []string // added to this process's environment
	// KeepLines keeps only the last lines of the log (0 keeps all): a load
	// run logs two audit lines per session.
	KeepLines int
	// Keep, if set, picks lines kept besides the last KeepLines (up to
	// 10,000 of them; Kept returns them): a load run's unusual endings.
	Keep func(line string) bool
	// StopWithin is how long Stop waits after SIGINT before it kills the
	// process; 20s if zero.
	StopWithin time.Duration
	// SlowStopFails makes a proxy that had to be killed a test failure.
	SlowStopFails bool
}

// Proxy is one running proxy process. Its log is its stderr, one JSON
// record a line (net/http's error log and the race detector's reports
// land there too, not as JSON).
type Proxy struct {
	// Addr and Health are the session and health addresses from its
	// "listening" line.
	Addr, Health string

	tb      testing.TB
	name    string // for messages: proxy or local-exec-backend
	o       ProxyOptions
	cmd     *osexec.Cmd
	log     *logBuffer
	exited  chan struct{}
	waitErr error // set before exited closes

	raceOnce sync.Once
}

// StartProxy starts the binary, waits for its "listening" line and stops
// it when tb's test ends. A race-built proxy that reports a data race
// fails tb.
func StartProxy(tb testing.TB, o ProxyOptions) *Proxy {
	tb.Helper()
	p := start(tb, o, "proxy", "address", "health_address")
	if p.Addr == "" || p.Health == "" {
		tb.Fatalf("listening line without address or health_address; log:\n%s", p.LogText())
	}
	return p
}

// StartBackendProcess runs cmd/local-exec-backend (see BuildBackend) as
// StartProxy runs the proxy: log kept, stopped with SIGINT when tb's test
// ends. Addr is the "addr" of its listening line; it has no health
// address, so Metrics and the readers built on it do not apply.
func StartBackendProcess(tb testing.TB, o ProxyOptions) *Proxy {
	tb.Helper()
	p := start(tb, o, "local-exec-backend", "addr", "")
	if p.Addr == "" {
		tb.Fatalf("listening line without addr; log:\n%s", p.LogText())
	}
	return p
}

// start runs o.Bin and returns once it has logged "listening", with Addr
// and Health read from the fields addrKey and healthKey of that line.
func start(tb testing.TB, o ProxyOptions, name, addrKey, healthKey string) *Proxy {
	tb.Helper()
	if o.StopWithin == 0 {
		o.StopWithin = 20 * time.Second
	}
	p := &Proxy{tb: tb, name: name, o: o, log: &logBuffer{keep: o.KeepLines, keepIf: o.Keep}, exited: make(chan struct{})}
	p.cmd = osexec.Command(o.Bin, o.Args...)
	if o.Env != nil {
		p.cmd.Env = append(os.Environ(), o.Env...)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	listening := make(chan map[string]any, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Text()
			p.log.add(line)
			if found {
				continue
			}
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "listening" {
				found = true
				listening <- m
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // a line too long for the scanner
	}()
	go func() {
		<-scanned // Wait must not close the pipe before it is drained
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	tb.Cleanup(func() {
		p.Stop()
		if tb.Failed() {
			tb.Logf("%s log:\n%s", name, p.LogText())
		}
	})
	select {
	case m := <-listening:
		p.Addr, _ = m[addrKey].(string)
		p.Health, _ = m[healthKey].(string)
	case <-p.exited:
		tb.Fatalf("%s exited before listening (%v); log:\n%s", name, p.waitErr, p.LogText())
	case <-time.After(60 * time.Second):
		tb.Fatalf("%s did not log 'listening' within 60s; log:\n%s", name, p.LogText())
	}
	return p
}

// Stop sends SIGINT and waits for the process to exit (its drain),
// killing it after StopWithin. It then fails the test if the proxy
// reported a data race. Calling it again does nothing more.
func (p *Proxy) Stop() {
	defer p.raceOnce.Do(func() {
		// A race-built proxy reports what it finds on stderr and carries
		// on: only its log shows it.
		if p.log.raced() {
			p.tb.Errorf("the %s reported a data race:\n%s", p.name, p.LogText())
		}
	})
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(p.o.StopWithin):
		if p.o.SlowStopFails {
			p.tb.Errorf("%s did not exit within %s of SIGINT", p.name, p.o.StopWithin)
		}
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Process is the running process, for signals a test sends itself.
func (p *Proxy) Process() *os.Process { return p.cmd.Process }

// Exited is closed once the process has exited and its log is read.
func (p *Proxy) Exited() <-chan struct{} { return p.exited }

// ExitState is how the process ended; nil before Exited is closed.
func (p *Proxy) ExitState() *os.ProcessState {
	select {
	case <-p.exited:
		return p.cmd.ProcessState
	default:
		return nil
	}
}

// LogText is the log so far (the kept lines), a newline after each line.
func (p *Proxy) LogText() string { return p.log.String() }

// LogMark is how many lines the proxy has logged so far, for
// WaitLogText's since.
func (p *Proxy) LogMark() int { return p.log.count() }

// LogLines returns the JSON log records whose msg is msg.
func (p *Proxy) LogLines(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range p.log.since(0) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// Kept is the lines ProxyOptions.Keep picked, in order.
func (p *Proxy) Kept() []string {
	p.log.mu.Lock()
	defer p.log.mu.Unlock()
	return slices.Clone(p.log.kept)
}

// WaitLog waits for a record with message msg for which match (if not
// nil) holds, woken by each new line, and returns it.
func (p *Proxy) WaitLog(within time.Duration, msg string, match func(map[string]any) bool) map[string]any {
	p.tb.Helper()
	timeout := time.NewTimer(within)
	defer timeout.Stop()
	for {
		changed := p.log.changes()
		for _, m := range p.LogLines(msg) {
			if match == nil || match(m) {
				return m
			}
		}
		select {
		case <-changed:
		case <-timeout.C:
			p.tb.Fatalf("no %q log line matching within %v; log:\n%s", msg, within, p.LogText())
		}
	}
}

// WaitLogText waits for a line logged after the first since lines that
// contains every one of parts, for lines not written by the proxy's own
// code (net/http's error log), and returns it.
func (p *Proxy) WaitLogText(within time.Duration, since int, parts ...string) string {
	p.tb.Helper()
	timeout := time.NewTimer(within)
	defer timeout.Stop()
	for {
		changed := p.log.changes()
	lines:
		for _, line := range p.log.since(since) {
			for _, part := range parts {
				if !strings.Contains(line, part) {
					continue lines
				}
			}
			return line
		}
		select {
		case <-changed:
		case <-timeout.C:
			p.tb.Fatalf("no log line containing %q; log:\n%s", parts, p.LogText())
		}
	}
}

// metricsClient keeps no idle connection: one of ours would count among
// the proxy's goroutines and leave a goroutine behind in this process.
var metricsClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// Metrics returns the proxy's /metrics text.
func (p *Proxy) Metrics() (string, error) {
	resp, err := metricsClient.Get("http://" + p.Health + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("/metrics: %s", resp.Status)
	}
	return string(b), nil
}

// Metric reads a sample from the proxy's /metrics: the first series of
// that name, whatever its labels (the OpenTelemetry exporter adds scope
// labels to every series).
func (p *Proxy) Metric(name string) (float64, error) {
	text, err := p.Metrics()
	if err != nil {
		return 0, err
	}
	return ParseMetric(text, name)
}

// ParseMetric finds the first sample of name (a gauge, counter or untyped
// family) in a Prometheus text exposition.
func ParseMetric(text, name string) (float64, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return 0, fmt.Errorf("/metrics: %w", err)
	}
	f, ok := families[name]
	if !ok || len(f.GetMetric()) == 0 {
		return 0, fmt.Errorf("/metrics has no %s", name)
	}
	switch m := f.GetMetric()[0]; {
	case m.Gauge != nil:
		return m.GetGauge().GetValue(), nil
	case m.Counter != nil:
		return m.GetCounter().GetValue(), nil
	case m.Untyped != nil:
		return m.GetUntyped().GetValue(), nil
	}
	return 0, fmt.Errorf("/metrics: %s is a %s, not one value", name, f.GetType())
}

// Goroutines reads go_goroutines from the proxy's /metrics.
func (p *Proxy) Goroutines() (int, error) {
	v, err := p.Metric("go_goroutines")
	return int(v), err
}

// WaitGoroutines polls the proxy until it runs at most want goroutines:
// sessions end asynchronously in another process, so there is no event to
// wait on. A /metrics request that fails meanwhile (a proxy tearing down a
// thousand sessions on a busy machine can take seconds to answer) is
// retried until the deadline. It returns the last count read.
func (p *Proxy) WaitGoroutines(want int, within time.Duration) (int, error) {
	last := -1
	err := poll.Until(context.Background(), 100*time.Millisecond, within, func(context.Context) error {
		n, err := p.Goroutines()
		if err != nil {
			return err
		}
		if last = n; n > want {
			return fmt.Errorf("%d goroutines", n)
		}
		return nil
	})
	if err != nil && last < 0 {
		return 0, err
	}
	return last, nil
}

// RSSKiB is the proxy's resident set (VmRSS) in KiB.
func (p *Proxy) RSSKiB() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS line")
}

// FDs is how many file descriptors the proxy holds open.
func (p *Proxy) FDs() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	return len(ents), err
}

// logBuffer holds the proxy's log lines and wakes waiters on each.
type logBuffer struct {
	mu      sync.Mutex
	keep    int // 0: all
	lines   []string
	dropped int // lines logged before lines[0]
	keepIf  func(string) bool
	kept    []string // lines keepIf picked
	race    bool     // a race report was seen, kept or not
	changed Changed
}

func (b *logBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if strings.Contains(line, "WARNING: DATA RACE") {
		b.race = true
	}
	if b.keepIf != nil && len(b.kept) < 10000 && b.keepIf(line) {
		b.kept = append(b.kept, line)
	}
	if b.keep > 0 && len(b.lines) == b.keep {
		b.lines = b.lines[1:]
		b.dropped++
	}
	b.lines = append(b.lines, line)
	b.changed.Fire()
}

func (b *logBuffer) changes() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed.Wait()
}

func (b *logBuffer) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped + len(b.lines)
}

// since returns the kept lines after the first n logged.
func (b *logBuffer) since(n int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := max(n-b.dropped, 0)
	if i > len(b.lines) {
		return nil
	}
	return append([]string(nil), b.lines[i:]...)
}

func (b *logBuffer) raced() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.race
}

func (b *logBuffer) String() string {
	var s strings.Builder
	for _, l := range b.since(0) {
		s.WriteString(l)
		s.WriteByte('\n')
	}
	return s.String()
}

// ServeArgs is a `serve` command line on loopback ports the kernel picks
// (the "listening" line tells which), with the key directory, kubeconfig,
// node name and exec transport every run needs; extra flags follow.
func ServeArgs(keyDir, kubeconfig, node, transport string, extra ...string) []string {
	return append([]string{"serve",
		"--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0",
		"--key-dir", keyDir, "--kubeconfig", kubeconfig,
		"--node-name", node, "--exec-transport", transport,
	}, extra...)
}
