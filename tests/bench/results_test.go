package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"text/tabwriter"
	"time"
)

// row is one line of the table printed at the end of a run.
type row struct {
	group  string // which stack and upstream transport; rows print grouped
	metric string
	// cols name the three columns (direct, relay, proxy unless the group
	// compares two proxies); vals are their figures ("-" where a path has
	// none).
	cols, vals [nPaths]string
	// compared says what the ratio is of ("proxy/relay", ...); ratio is
	// its median over interleaved pairs with the interquartile range.
	compared, ratio string
	target          string // "-" for a figure without a target
	pass            bool
	gate            bool   // a miss fails make bench: a headline target
	samples         string // what the numbers rest on
}

// groups in print order: the headline first.
var groupOrder = []string{groupWS, groupDemux, groupSPDY, groupAPI, groupRec, groupObs}

const (
	groupWS    = "local backend, proxy upstream websocket, frame relay (headline)"
	groupDemux = "local backend, proxy upstream websocket, demux (--frame-relay=off)"
	groupSPDY  = "local backend, proxy upstream spdy (client-go remotecommand)"
	groupAPI   = "through kube-apiserver (websocket v5 to it, frame relay; spdy from it to the kubelet)"
	groupRec   = "recording on vs off (local backend, websocket, frame relay, same workload)"
	groupObs   = "5 observers vs none (local backend, websocket, frame relay)"
)

// resultTable collects rows across benchmarks. A benchmark function runs
// several times with growing b.N; the last (longest) run's row wins.
type resultTable struct {
	mu    sync.Mutex
	notes []string
	rows  []row
}

var results resultTable

func (r *resultTable) set(x row) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.rows {
		if r.rows[i].group == x.group && r.rows[i].metric == x.metric {
			r.rows[i] = x
			return
		}
	}
	r.rows = append(r.rows, x)
}

func (r *resultTable) note(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.notes, s) {
		r.notes = append(r.notes, s)
	}
}

// missed lists the rows that missed a target gating make bench.
func (r *resultTable) missed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, x := range r.rows {
		if x.gate && !x.pass {
			out = append(out, fmt.Sprintf("%s: %s %s %s, target %s", x.group, x.metric, x.compared, x.ratio, x.target))
		}
	}
	return out
}

func (r *resultTable) print(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "k8s-ws-proxy side-by-side results (one run; direct, relay and proxy interleaved)")
	for _, n := range r.notes {
		fmt.Fprintln(w, "  "+n)
	}
	rows := slices.Clone(r.rows)
	slices.SortStableFunc(rows, func(a, b row) int {
		return slices.Index(groupOrder, a.group) - slices.Index(groupOrder, b.group)
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	last := ""
	for _, x := range rows {
		if x.group != last {
			fmt.Fprintf(tw, "\n== %s\nmetric\t%s\t%s\t%s\tcompared\tmedian [IQR]\ttarget\tresult\tsamples\n", x.group, x.cols[0], x.cols[1], x.cols[2])
			last = x.group
		}
		v := "PASS"
		switch {
		case x.target == "-":
			v = "-"
		case !x.pass && x.gate:
			v = "FAIL (gate)"
		case !x.pass:
			v = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.metric, x.vals[0], x.vals[1], x.vals[2], x.compared, x.ratio, x.target, v, x.samples)
	}
	tw.Flush()
}

// percentile is the nearest-rank percentile (p in (0,100]) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// quartiles are the first quartile, median and third quartile of xs,
// linearly interpolated between order statistics.
func quartiles(xs []float64) (q1, med, q3 float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	at := func(p float64) float64 {
		pos := p * float64(len(s)-1)
		i := int(math.Floor(pos))
		if i+1 >= len(s) {
			return s[len(s)-1]
		}
		f := pos - float64(i)
		if f == 0 {
			return s[i]
		}
		return s[i] + f*(s[i+1]-s[i])
	}
	return at(0.25), at(0.5), at(0.75)
}

// ratioSummary is "median [q1–q3]" of per-pair ratios, and the median.
func ratioSummary(ratios []float64) (string, float64) {
	q1, med, q3 := quartiles(ratios)
	return fmt.Sprintf("%.2fx [%.2f–%.2f]", med, q1, q3), med
}

// ms formats a duration in milliseconds with enough digits for sub-ms
// round trips.
func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func ratioOf(num, den float64) float64 {
	if den == 0 {
		return math.Inf(1)
	}
	return num / den
}
