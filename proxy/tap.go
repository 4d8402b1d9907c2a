package proxy

import (
	"slices"
	"sync/atomic"
	"unicode/utf8"
)

// outputTap sees a session's output after its client was sent it: the
// recording and the observers' fan-out. Every path that writes output to
// the client (the WebSocket IO loop, a frame relay) calls it with exactly
// the bytes the client was sent, in order, one call at a time.
type outputTap interface {
	tapOutput(channel byte, p []byte)
}

var _ outputTap = (*session)(nil)

func (ss *session) tapOutput(channel byte, p []byte) {
	if len(p) == 0 {
		return
	}
	ss.recordOutput(channel, p)
	ss.fanOutput(channel, p)
}

// passOn hands output the client got to the observers, and to the
// recording unless recordFirst already gave it.
func (ss *session) passOn(recorded bool, channel byte, p []byte) {
	if recorded {
		ss.fanOutput(channel, p)
	} else {
		ss.tapOutput(channel, p)
	}
}

// fanOutput feeds the observers only (a required recording has already
// taken the bytes).
func (ss *session) fanOutput(channel byte, p []byte) {
	if len(p) == 0 {
		return
	}
	if f := ss.outputFanout(); f != nil {
		f.output(channel, p)
	}
}

// outputFanout is the session's fan-out, created on first use; nil for
// an observer's own connection and when there is neither scrollback nor an
// observer to feed.
func (ss *session) outputFanout() *fanout {
	if f := ss.fan.Load(); f != nil {
		return f
	}
	if ss.observing != nil || observerScrollback(ss.cfg) <= 0 {
		return nil
	}
	return ss.attachFanout()
}

// attachFanout returns the session's fan-out, creating it if need be
// (also for a session with no scrollback: an observer joins it).
func (ss *session) attachFanout() *fanout {
	f := &fanout{limit: observerScrollback(ss.cfg), whole: !ss.claims.TTY, observers: map[*observer]struct{}{}}
	if ss.fan.CompareAndSwap(nil, f) {
		return f
	}
	return ss.fan.Load()
}

// tapChunk is one piece of output, shared read-only by the scrollback and
// every observer's queue.
type tapChunk struct {
	channel byte
	b       []byte
	own     bool // only the scrollback holds b: reusable once dropped
}

// scrollback keeps the last limit bytes of output as whole chunks (the
// first one cut), so the pieces need no copy when an observer joins.
type scrollback struct {
	chunks []tapChunk
	head   int // chunks[:head] are dropped
	bytes  int
	// spare holds the buffers of dropped chunks that nobody else saw, for
	// the next chunk: with no observer, the scrollback of a busy session
	// otherwise allocated every byte of its output once more (pprof).
	spare [][]byte
}

// buffer returns n bytes to copy a chunk into, a spare one if it fits.
func (sb *scrollback) buffer(n int) []byte {
	for i := len(sb.spare) - 1; i >= 0; i-- {
		if b := sb.spare[i]; cap(b) >= n {
			sb.spare = slices.Delete(sb.spare, i, i+1)
			return b[:n]
		}
	}
	return make([]byte, n)
}

func (sb *scrollback) drop(c tapChunk) {
	if c.own && len(sb.spare) < 4 {
		sb.spare = append(sb.spare, c.b[:0])
	}
}

func (sb *scrollback) add(c tapChunk, limit int, whole bool) {
	sb.chunks = append(sb.chunks, c)
	sb.bytes += len(c.b)
	for sb.bytes-len(sb.chunks[sb.head].b) >= limit {
		sb.bytes -= len(sb.chunks[sb.head].b)
		sb.drop(sb.chunks[sb.head])
		sb.chunks[sb.head] = tapChunk{}
		sb.head++
	}
	if over := sb.bytes - limit; over > 0 {
		first := &sb.chunks[sb.head]
		cut := over
		// Without a tty frames carry whole characters: start at one.
		for whole && cut < len(first.b) && !utf8.RuneStart(first.b[cut]) {
			cut++
		}
		first.b = first.b[cut:]
		sb.bytes -= cut
	}
	if sb.head > len(sb.chunks)/2 {
		n := copy(sb.chunks, sb.chunks[sb.head:])
		clear(sb.chunks[n:])
		sb.chunks, sb.head = sb.chunks[:n], 0
	}
}

// snapshot returns the chunks held; from now on others hold them too.
func (sb *scrollback) snapshot() []tapChunk {
	for i := sb.head; i < len(sb.chunks); i++ {
		sb.chunks[i].own = false
	}
	return append([]tapChunk(nil), sb.chunks[sb.head:]...)
}

// fanoutField is the session's fan-out pointer (nil until first used).
type fanoutField = atomic.Pointer[fanout]
