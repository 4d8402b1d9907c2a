// Package testlog captures what a component logs, for tests that assert on
// it: a goroutine-safe buffer behind a JSON slog logger at debug level.
package testlog

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
)

// Buffer is a goroutine-safe log sink. The zero value is ready to use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Reset forgets what was logged so far.
func (b *Buffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

// Count returns how many lines contain s.
func (b *Buffer) Count(s string) int {
	n := 0
	for l := range strings.SplitSeq(b.String(), "\n") {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// Logger returns a JSON logger at debug level that writes to b.
func (b *Buffer) Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
