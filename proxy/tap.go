package proxy

import (
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

// tapChunk is one piece of output, shared read-only by every observer's
// queue.
type tapChunk struct {
	channel byte
	b       []byte
}

// scrollback keeps the last limit bytes of output in a ring that grows
// up to limit, with the channel of each run of bytes. Copying into a ring
// allocates nothing once it is full: a busy session's scrollback of
// cloned chunks was most of the proxy's allocation under bulk (pprof).
type scrollback struct {
	buf   []byte // the ring; its first len(buf) bytes are in use
	start int    // where the oldest byte held is
	bytes int    // bytes held
	runs  []run  // channels of the bytes held, oldest first, from runs[head]
	head  int
}

// run is a stretch of consecutive bytes of one channel.
type run struct {
	channel byte
	n       int
}

// add appends p on channel, dropping the oldest bytes beyond limit. With
// whole (no tty: frames carry whole UTF-8 characters) what is kept starts
// at a character, as every frame does.
func (sb *scrollback) add(channel byte, p []byte, limit int, whole bool) {
	if len(p) == 0 || limit <= 0 {
		return
	}
	if len(p) > limit {
		cut := len(p) - limit
		for whole && cut < len(p) && !utf8.RuneStart(p[cut]) {
			cut++
		}
		sb.reset()
		p = p[cut:]
	}
	if over := sb.bytes + len(p) - limit; over > 0 {
		sb.dropFront(over, whole)
	}
	sb.grow(sb.bytes+len(p), limit)
	at := (sb.start + sb.bytes) % len(sb.buf)
	n := copy(sb.buf[at:], p)
	copy(sb.buf, p[n:])
	sb.bytes += len(p)
	if k := len(sb.runs); k > sb.head && sb.runs[k-1].channel == channel {
		sb.runs[k-1].n += len(p)
	} else {
		sb.runs = append(sb.runs, run{channel: channel, n: len(p)})
	}
}

func (sb *scrollback) reset() {
	sb.start, sb.bytes = 0, 0
	sb.runs, sb.head = sb.runs[:0], 0
}

// grow makes the ring hold at least need bytes (need <= limit), doubling
// up to limit so that a quiet session keeps a small one.
func (sb *scrollback) grow(need, limit int) {
	if need <= len(sb.buf) {
		return
	}
	size := min(max(need, 2*len(sb.buf), 512), limit)
	buf := make([]byte, size)
	sb.copyOut(buf)
	sb.buf, sb.start = buf, 0
}

// copyOut copies the bytes held, oldest first, to the start of dst.
func (sb *scrollback) copyOut(dst []byte) {
	n := copy(dst, sb.buf[sb.start:min(sb.start+sb.bytes, len(sb.buf))])
	copy(dst[n:], sb.buf[:sb.bytes-n])
}

// dropFront forgets the oldest n bytes, and with whole the continuation
// bytes of a character cut after them.
func (sb *scrollback) dropFront(n int, whole bool) {
	for whole && n < sb.bytes && !utf8.RuneStart(sb.buf[(sb.start+n)%len(sb.buf)]) {
		n++
	}
	n = min(n, sb.bytes)
	sb.start = (sb.start + n) % max(len(sb.buf), 1)
	sb.bytes -= n
	for n > 0 {
		r := &sb.runs[sb.head]
		if r.n > n {
			r.n -= n
			break
		}
		n -= r.n
		sb.head++
	}
	if sb.head > len(sb.runs)/2 {
		k := copy(sb.runs, sb.runs[sb.head:])
		sb.runs, sb.head = sb.runs[:k], 0
	}
}

// snapshot returns a copy of what is held, one chunk per run.
func (sb *scrollback) snapshot() []tapChunk {
	if sb.bytes == 0 {
		return nil
	}
	all := make([]byte, sb.bytes)
	sb.copyOut(all)
	out := make([]tapChunk, 0, len(sb.runs)-sb.head)
	for _, r := range sb.runs[sb.head:] {
		out = append(out, tapChunk{channel: r.channel, b: all[:r.n:r.n]})
		all = all[r.n:]
	}
	return out
}

// fanoutField is the session's fan-out pointer (nil until first used).
type fanoutField = atomic.Pointer[fanout]
