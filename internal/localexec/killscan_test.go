package localexec

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// Kills that arrive together share scans, and each returns only after a
// scan that began after it asked and that covered its session.
func TestKillBatcherSharesScans(t *testing.T) {
	var scans atomic.Int32
	release := make(chan struct{})
	var mu sync.Mutex
	covered := map[int]int32{} // sid -> the scan that covered it
	k := &killBatcher{scan: func(sids map[int][]chan struct{}) {
		n := scans.Add(1)
		if n == 1 {
			<-release // the first scan is slow: the others queue up
		}
		mu.Lock()
		for sid := range sids {
			covered[sid] = n
		}
		mu.Unlock()
	}}
	first := make(chan struct{})
	go func() { k.kill(1); close(first) }()
	for scans.Load() == 0 {
		runtime.Gosched() // the first scan must be under way before the rest ask
	}
	const n = 200
	var wg sync.WaitGroup
	for sid := 2; sid < 2+n; sid++ {
		wg.Go(func() { k.kill(sid) })
	}
	for {
		k.mu.Lock()
		queued := len(k.pending)
		k.mu.Unlock()
		if queued == n {
			break
		}
		runtime.Gosched()
	}
	close(release)
	<-first
	wg.Wait()
	if got := scans.Load(); got != 2 {
		t.Errorf("%d scans for %d kills, want 2 (one under way, one for all that queued behind it)", got, n+1)
	}
	for sid := 2; sid < 2+n; sid++ {
		if covered[sid] != 2 {
			t.Fatalf("session %d covered by scan %d, want the scan after its request (2)", sid, covered[sid])
		}
	}
	// The loop ends once it finds nothing pending (goleak checks the
	// package's goroutines at the end).
}
