package proxy

import "testing"

func TestRuneCutAndTail(t *testing.T) {
	b := []byte("a✓b") // ✓ is 3 bytes at 1..3
	for k, want := range map[int]int{1: 1, 2: 1, 3: 1, 4: 4} {
		if got := runeCut(b, k); got != want {
			t.Errorf("runeCut(%q, %d) = %d, want %d", b, k, got, want)
		}
	}
	if got := runeCut([]byte("✓✓"), 1); got != 1 {
		t.Errorf("a frame must keep a byte: %d", got)
	}
	bad := []byte{'a', 0xff, 0x80, 0x80, 'b'}
	if got := runeCut(bad, 3); got != 3 {
		t.Errorf("non-UTF-8 bytes are cut anywhere: %d", got)
	}
	for in, want := range map[string]int{"a": 0, "a\xe2": 1, "a\xe2\x9c": 2, "a\xe2\x9c\x93": 0, "\xff": 0, "\x80\x80": 0, "\xf0\x9f\x98": 3} {
		if got := incompleteTail([]byte(in)); got != want {
			t.Errorf("incompleteTail(%q) = %d, want %d", in, got, want)
		}
	}
}
