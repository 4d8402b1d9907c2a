package proxy

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"unicode/utf8"
)

// With no observer the scrollback allocates nothing once its ring is
// full, whatever the sizes of the pieces of output (the chunk list it
// replaced allocated once per output when sizes did not divide the limit).
func TestScrollbackAllocatesNothingWhenFull(t *testing.T) {
	f := &fanout{limit: 64 << 10, observers: map[*observer]struct{}{}}
	var outs [][]byte
	for _, n := range []int{20000, 32 << 10, 7000, 31000, 12345, 1, 70 << 10} {
		outs = append(outs, bytes.Repeat([]byte{'a'}, n))
	}
	for i := range 3 * len(outs) {
		f.output(1, outs[i%len(outs)])
	}
	i := 0
	if allocs := testing.AllocsPerRun(200, func() { f.output(1, outs[i%len(outs)]); i++ }); allocs > 0 {
		t.Errorf("%.2f allocations per output with no observer, want 0", allocs)
	}
}

// What an observer was given stays as it was: later output never
// overwrites a snapshot.
func TestScrollbackSnapshotIsACopy(t *testing.T) {
	f := &fanout{limit: 64 << 10, observers: map[*observer]struct{}{}}
	for i := range 4 {
		f.output(1, bytes.Repeat([]byte{byte('a' + i)}, 30000))
	}
	f.mu.Lock()
	held := f.back.snapshot()
	f.mu.Unlock()
	var want [][]byte
	for _, c := range held {
		want = append(want, bytes.Clone(c.b))
	}
	for i := range 8 {
		f.output(1, bytes.Repeat([]byte{byte('m' + i)}, 30000))
	}
	for i, c := range held {
		if !bytes.Equal(c.b, want[i]) {
			t.Fatalf("chunk %d given to an observer was overwritten by later output (%q...)", i, c.b[:8])
		}
	}
}

// The scrollback holds exactly what a naive model holds: the last limit
// bytes of output with their channels, and without a tty starting at a
// character. Random sizes, channels and UTF-8 text, several limits.
func TestScrollbackMatchesModel(t *testing.T) {
	type held struct {
		ch byte
		b  byte
	}
	text := []byte("héllo wörld ✓ 𝄞 plain ascii run ")
	for _, limit := range []int{1, 7, 100, 4096} {
		for _, whole := range []bool{false, true} {
			rng := rand.New(rand.NewPCG(uint64(limit), 1))
			var sb scrollback
			var model []held
			for step := range 3000 {
				n := rng.IntN(2*limit + 2)
				if rng.IntN(4) > 0 {
					n = rng.IntN(limit/2 + 2)
				}
				p := make([]byte, n)
				for i := range p {
					p[i] = text[(step+i)%len(text)]
				}
				ch := byte(1 + rng.IntN(2))
				sb.add(ch, p, limit, whole)

				if len(p) > limit {
					cut := len(p) - limit
					for whole && cut < len(p) && !utf8.RuneStart(p[cut]) {
						cut++
					}
					model, p = model[:0], p[cut:]
				}
				if over := len(model) + len(p) - limit; over > 0 {
					for whole && over < len(model) && !utf8.RuneStart(model[over].b) {
						over++
					}
					model = model[min(over, len(model)):]
				}
				for _, b := range p {
					model = append(model, held{ch, b})
				}

				var got []held
				prev := byte(0)
				for _, c := range sb.snapshot() {
					if c.channel == prev {
						t.Fatalf("limit %d whole %v step %d: two runs of channel %d in a row", limit, whole, step, prev)
					}
					prev = c.channel
					for _, b := range c.b {
						got = append(got, held{c.channel, b})
					}
				}
				if len(got) != len(model) || sb.bytes != len(model) {
					t.Fatalf("limit %d whole %v step %d: holds %d bytes (counted %d), model %d", limit, whole, step, len(got), sb.bytes, len(model))
				}
				for i := range got {
					if got[i] != model[i] {
						t.Fatalf("limit %d whole %v step %d: byte %d is %v, model %v", limit, whole, step, i, got[i], model[i])
					}
				}
				if len(sb.buf) > limit {
					t.Fatalf("limit %d: ring of %d bytes", limit, len(sb.buf))
				}
			}
		}
	}
}
