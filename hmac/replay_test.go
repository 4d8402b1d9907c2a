package hmac

import (
	"runtime"
	"strconv"
	"testing"
	"time"
)

func TestReplayCacheForgetsOnTime(t *testing.T) {
	r := newReplayCache(10, DefaultMaxTTL+2*DefaultLeeway)
	forget := t0.Add(10*time.Second + 500*time.Millisecond)
	if got := r.consume("a", forget, t0); got != "" {
		t.Fatalf("first use: %q", got)
	}
	// Kept through forgetAt (rounded up to the whole second)...
	for _, now := range []time.Time{t0.Add(10 * time.Second), forget, t0.Add(11*time.Second - time.Nanosecond)} {
		if got := r.consume("a", forget, now); got != ReasonReplayed {
			t.Fatalf("at %s: %q, want replayed", now.Sub(t0), got)
		}
	}
	// ...and not a second longer.
	if got := r.consume("b", t0.Add(time.Minute), t0.Add(11*time.Second)); got != "" {
		t.Fatal(got)
	}
	if n := r.len(); n != 1 {
		t.Errorf("%d entries after a's forget time, want 1 (b)", n)
	}
}

func TestReplayCacheClockJumps(t *testing.T) {
	r := newReplayCache(10, DefaultMaxTTL+2*DefaultLeeway)
	// Backwards: an entry whose forget time lies before the ring's start
	// is kept until the ring's start rather than dropped.
	if r.consume("x", t0.Add(100*time.Second), t0.Add(90*time.Second)) != "" {
		t.Fatal("x")
	}
	if r.consume("y", t0.Add(5*time.Second), t0) != "" {
		t.Fatal("y")
	}
	if r.consume("y", t0.Add(5*time.Second), t0.Add(6*time.Second)) != ReasonReplayed {
		t.Error("y forgotten after the clock went backwards")
	}
	// Forwards by far more than the ring: everything is forgotten, nothing
	// breaks.
	if r.consume("z", t0.Add(48*time.Hour+time.Minute), t0.Add(48*time.Hour)) != "" {
		t.Fatal("z")
	}
	if n := r.len(); n != 1 {
		t.Errorf("%d entries after a 48h jump, want 1", n)
	}
	// A forget time beyond the ring is refused, never stored short.
	if got := r.consume("far", t0.Add(72*time.Hour), t0.Add(48*time.Hour)); got != ReasonTTLTooLong {
		t.Errorf("forget time beyond the ring: %q", got)
	}
	// Times before 1970 do not break the ring arithmetic.
	old := time.Unix(-1000, 0)
	r2 := newReplayCache(10, time.Minute)
	if r2.consume("o", old.Add(30*time.Second), old) != "" || r2.consume("o", old.Add(30*time.Second), old.Add(time.Second)) != ReasonReplayed {
		t.Error("pre-1970 times")
	}
}

func TestReplayCacheShrinksAfterBurst(t *testing.T) {
	r := newReplayCache(100_000, time.Minute)
	for i := range 20_000 {
		r.consume(strconv.Itoa(i), t0.Add(10*time.Second), t0)
	}
	r.consume("late", t0.Add(50*time.Second), t0.Add(20*time.Second))
	if n := r.len(); n != 1 {
		t.Fatalf("%d entries after the burst expired", n)
	}
	if r.peak != 1 {
		t.Errorf("map not rebuilt after the burst (peak %d)", r.peak)
	}
}

// replayBytesPerJTI measures the heap the replay cache holds per
// remembered jti with n outstanding, forget times spread over 5 minutes.
func replayBytesPerJTI(n int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := newReplayCache(n, DefaultMaxTTL+2*DefaultLeeway)
	for i := range n {
		// 22-character jtis, like NewID's.
		jti := "jti-" + strconv.FormatInt(int64(1e17+i), 10)
		if r.consume(jti, t0.Add(time.Duration(30+i%300)*time.Second), t0) != "" {
			panic("consume failed")
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(r)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

func TestReplayCacheMemoryPerJTI(t *testing.T) {
	const limit = 128
	if b := replayBytesPerJTI(100_000); b > limit {
		t.Errorf("%.1f bytes per remembered jti with 100k outstanding, want <= %d", b, limit)
	} else {
		t.Logf("%.1f bytes per remembered jti with 100k outstanding", b)
	}
}
