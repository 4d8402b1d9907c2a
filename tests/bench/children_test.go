package bench

import (
	"os"
	osexec "os/exec"
	"testing"
)

// TestNewChildren: processes of an earlier run that exit while a new run
// starts its own must not cancel the new ones out. Counting (processes
// now minus processes before) did exactly that: BenchmarkIdleSessionMemory
// over WebSocket, run after the SPDY one while the backend was still
// ending that run's 1,000 processes, saw "794 more processes" with 1,000
// sessions open.
func TestNewChildren(t *testing.T) {
	start := func(n int) []*osexec.Cmd {
		var cs []*osexec.Cmd
		for range n {
			c := osexec.Command("sleep", "60")
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		return cs
	}
	stop := func(cs []*osexec.Cmd) {
		for _, c := range cs {
			c.Process.Kill()
			c.Wait()
		}
	}
	earlier := start(4)
	defer stop(earlier)
	before := childrenOf(os.Getpid())
	if len(before) < 4 {
		t.Fatalf("%d children before, want at least the 4 started", len(before))
	}
	stop(earlier[:3]) // the earlier run's processes end meanwhile...
	now := start(5)   // ...while this run's start
	defer stop(now)
	after := childrenOf(os.Getpid())
	if got := newChildren(before, after); got != 5 {
		t.Errorf("newChildren = %d, want 5 (counting gives %d)", got, len(after)-len(before))
	}
	// Zombies are not live processes.
	stop(now[:1])
	if got := newChildren(before, childrenOf(os.Getpid())); got != 4 {
		t.Errorf("after one exited: newChildren = %d, want 4", got)
	}
}
