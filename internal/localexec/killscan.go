package localexec

import "sync"

// sessionKills shares one scan of /proc among the kills that wait for it.
// A scan reads every process's stat file; one per ended session made a mass
// disconnect quadratic (2,000 sessions dropped at once: 2,000 scans of
// 2,000+ processes, twice each, left processes running for over a minute
// while the scans starved the connection readers that notice the
// disconnects). Each kill returns after a scan that began after it asked.
var sessionKills = &killBatcher{scan: killScan}

type killBatcher struct {
	scan    func(sids map[int][]chan struct{})
	mu      sync.Mutex
	pending map[int][]chan struct{} // sid -> the callers waiting for it
	running bool
}

func (k *killBatcher) kill(sid int) {
	done := make(chan struct{})
	k.mu.Lock()
	if k.pending == nil {
		k.pending = map[int][]chan struct{}{}
	}
	k.pending[sid] = append(k.pending[sid], done)
	if !k.running {
		k.running = true
		go k.loop()
	}
	k.mu.Unlock()
	<-done
}

// loop scans for whatever is pending until nothing is; it exits then, so an
// idle backend runs no goroutine of it.
func (k *killBatcher) loop() {
	for {
		k.mu.Lock()
		batch := k.pending
		k.pending = nil
		if len(batch) == 0 {
			k.running = false
			k.mu.Unlock()
			return
		}
		k.mu.Unlock()
		k.scan(batch)
		for _, waiters := range batch {
			for _, c := range waiters {
				close(c)
			}
		}
	}
}
