package testlog

import (
	"sync"
	"testing"
)

func TestBuffer(t *testing.T) {
	var b Buffer
	log := b.Logger()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { log.Debug("line", "i", i) })
	}
	wg.Wait()
	log.Info("other")
	if n := b.Count(`"msg":"line"`); n != 8 {
		t.Errorf("Count = %d, want 8:\n%s", n, b.String())
	}
	if b.Count("other") != 1 || b.Count("absent") != 0 {
		t.Errorf("Count wrong:\n%s", b.String())
	}
	b.Reset()
	if b.String() != "" {
		t.Error("Reset kept the log")
	}
}
