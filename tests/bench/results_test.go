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
	metric, direct, proxy, ratio, target string
	pass                                 bool
	samples                              string // what the numbers rest on
}

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
		if r.rows[i].metric == x.metric {
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

func (r *resultTable) print(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "k8s-ws-proxy side-by-side results (one run, direct and proxy interleaved)")
	for _, n := range r.notes {
		fmt.Fprintln(w, "  "+n)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tdirect\tproxy\tratio\ttarget\tresult\tsamples")
	for _, x := range r.rows {
		v := "PASS"
		if !x.pass {
			v = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.metric, x.direct, x.proxy, x.ratio, x.target, v, x.samples)
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

// ms formats a duration in milliseconds with enough digits for sub-ms
// round trips.
func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func ratioOf(proxy, direct float64) float64 {
	if direct == 0 {
		return math.Inf(1)
	}
	return proxy / direct
}
