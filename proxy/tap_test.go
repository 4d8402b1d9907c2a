package proxy

import (
	"bytes"
	"testing"
)

// With no observer the scrollback reuses the buffers of the chunks it
// drops, so a busy session's output is not allocated a second time; a
// chunk an observer was given (snapshot) is never reused.
func TestScrollbackReusesOnlyUnsharedBuffers(t *testing.T) {
	f := &fanout{limit: 64 << 10, observers: map[*observer]struct{}{}}
	chunk := bytes.Repeat([]byte{'a'}, 32<<10)
	for range 8 {
		f.output(1, chunk)
	}
	if allocs := testing.AllocsPerRun(100, func() { f.output(1, chunk) }); allocs > 0 {
		t.Errorf("%.1f allocations per output with no observer, want 0", allocs)
	}

	f.mu.Lock()
	held := f.back.snapshot()
	f.mu.Unlock()
	var want [][]byte
	for _, c := range held {
		want = append(want, bytes.Clone(c.b))
	}
	for i := range 8 {
		f.output(1, bytes.Repeat([]byte{byte('b' + i)}, 32<<10))
	}
	for i, c := range held {
		if !bytes.Equal(c.b, want[i]) {
			t.Fatalf("chunk %d given to an observer was overwritten by later output (%q...)", i, c.b[:8])
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.back.bytes != 64<<10 {
		t.Fatalf("scrollback holds %d bytes, want %d", f.back.bytes, 64<<10)
	}
	last := f.back.chunks[len(f.back.chunks)-1].b
	if !bytes.Equal(last, bytes.Repeat([]byte{'i'}, 32<<10)) {
		t.Fatalf("newest chunk starts %q", last[:8])
	}
}
