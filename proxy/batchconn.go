package proxy

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// maxBatch bounds what one write system call toward a client carries.
const maxBatch = 64 << 10

// batchPool starts buffers small (most batches are a keystroke's echo) and
// keeps them at whatever size bulk output grew them to.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// batchConn is the client's connection under gorilla/websocket. While a
// session sends one chunk of exec output, it collects the frames gorilla
// writes and sends them with one system call: a 32 KiB read from the exec
// becomes eight 4 KiB frames, and eight writes (each waking the client to
// read) cost the proxy more than all its copying. Every frame stays whole
// and separate on the wire; only the system calls are fewer.
//
// gorilla serialises its own writes, so a control frame written while a
// batch is open (a pong from the read loop) lands between two whole
// frames of the batch.
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	buf      *[]byte      // non-nil while a batch is open
	deadline time.Time    // the write deadline gorilla asked for last
	armed    time.Time    // the write deadline set on the socket
	err      error        // a failed write: the stream may end in half a frame
	limit    atomic.Int64 // unix nanoseconds no write may outlast (0: none)

	// onCloseFrame, if set, is told the payload length of each close
	// frame the client sends, before gorilla reads it: gorilla reports a
	// 1-byte close payload (malformed) as one without a code.
	onCloseFrame func(n int)
	scan         frameScanner

	// gorilla's own writes are followed frame by frame: once it has sent a
	// close frame (its reply to a too-large or malformed message), no data
	// frame may follow, as gorilla's ErrCloseSent ensured for its writes.
	framing   bool // the handshake's response is written: frames follow
	wscan     frameScanner
	closeSent bool
}

// limitWrites makes every write, the one in progress included, end by t.
// It takes no lock: a writer stalled on the socket holds c.mu.
func (c *batchConn) limitWrites(t time.Time) {
	c.limit.Store(t.UnixNano())
	_ = c.Conn.SetWriteDeadline(t)
}

// Read is gorilla reading the client's frames.
func (c *batchConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.onCloseFrame != nil && n > 0 {
		c.scan.scan(p[:n], c.onCloseFrame)
	}
	return n, err
}

// frameScanner follows the client's frame headers in the byte stream
// (reads are sequential: one goroutine).
type frameScanner struct {
	hdr  [14]byte
	n    int
	skip uint64
}

func (f *frameScanner) scan(p []byte, onClose func(int)) {
	for len(p) > 0 {
		if f.skip > 0 {
			k := min(uint64(len(p)), f.skip)
			f.skip -= k
			p = p[k:]
			continue
		}
		f.hdr[f.n] = p[0]
		f.n++
		p = p[1:]
		if f.n < 2 {
			continue
		}
		l7 := f.hdr[1] & 0x7f
		hl := 2
		switch l7 {
		case 126:
			hl = 4
		case 127:
			hl = 10
		}
		if f.hdr[1]&0x80 != 0 {
			hl += 4 // masking key
		}
		if f.n < hl {
			continue
		}
		length := uint64(l7)
		switch l7 {
		case 126:
			length = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
		case 127:
			length = binary.BigEndian.Uint64(f.hdr[2:10]) &^ (1 << 63)
		}
		if f.hdr[0]&0x0f == 8 {
			onClose(int(min(length, 1<<20)))
		}
		f.n, f.skip = 0, length
	}
}

// startBatch makes writes collect until flush.
func (c *batchConn) startBatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		c.buf = batchPool.Get().(*[]byte)
	}
}

// batched is the number of bytes the open batch holds.
func (c *batchConn) batched() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		return 0
	}
	return len(*c.buf)
}

// flush sends the open batch, if any, and closes it.
func (c *batchConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.buf
	if b == nil {
		return c.err
	}
	c.buf = nil
	defer func() {
		*b = (*b)[:0]
		batchPool.Put(b)
	}()
	if len(*b) == 0 || c.err != nil {
		return c.err
	}
	return c.writeLocked(c.deadline, *b)
}

func (c *batchConn) writeLocked(deadline time.Time, p []byte) error {
	if l := c.limit.Load(); l != 0 && (deadline.IsZero() || deadline.UnixNano() > l) {
		deadline = time.Unix(0, l)
	}
	if rearm(c.armed, deadline) {
		if err := c.Conn.SetWriteDeadline(deadline); err != nil {
			c.err = err
			return err
		}
		c.armed = deadline
	}
	if _, err := c.Conn.Write(p); err != nil {
		c.err = err
		return err
	}
	return nil
}

// Write is gorilla writing a frame or a piece of one.
func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.framing {
		c.wscan.scan(p, func(int) { c.closeSent = true })
	}
	if c.buf != nil {
		*c.buf = append(*c.buf, p...)
		return len(p), nil
	}
	if err := c.writeLocked(c.deadline, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeFrame writes one whole binary server frame, channel then payload,
// in one piece: what gorilla's WriteMessage sends, without its two copies
// (the frame buffer, then gorilla's write buffer) or a buffer per frame.
// Data frames are written only under the session's write lock, and gorilla
// writes each control frame in one Write, so frames never interleave.
func (c *batchConn) writeFrame(channel byte, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.err != nil:
		return c.err
	case c.closeSent:
		return websocket.ErrCloseSent
	case c.buf != nil:
		*c.buf = appendFrame(*c.buf, channel, payload)
		return nil
	}
	b := batchPool.Get().(*[]byte)
	defer func() {
		*b = (*b)[:0]
		batchPool.Put(b)
	}()
	*b = appendFrame(*b, channel, payload)
	return c.writeLocked(c.deadline, *b)
}

// appendFrame appends an unmasked, final binary frame (RFC 6455 5.2)
// whose payload is channel then p.
func appendFrame(b []byte, channel byte, p []byte) []byte {
	const finBinary = 0x80 | websocket.BinaryMessage
	switch n := 1 + len(p); {
	case n < 126:
		b = append(b, finBinary, byte(n))
	case n <= 0xffff:
		b = append(b, finBinary, 126, byte(n>>8), byte(n))
	default:
		b = append(b, finBinary, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, channel)
	return append(b, p...)
}

// SetWriteDeadline is gorilla arming the deadline before each frame; it
// applies to the system call that carries the frame.
func (c *batchConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	return nil
}

// SetDeadline passes the read half through and keeps the write half for
// the next system call.
func (c *batchConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// batchingWriter hands gorilla's upgrader a batchConn when it hijacks the
// client's connection.
type batchingWriter struct {
	http.ResponseWriter
	conn *batchConn
}

func (w *batchingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &batchConn{Conn: nc}
	return w.conn, brw, nil
}

func (w *batchingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// upgradeBatching upgrades the client's connection onto a batchConn.
func (s *Server) upgradeBatching(w http.ResponseWriter, r *http.Request, hdr http.Header) (*websocket.Conn, *batchConn, error) {
	bw := &batchingWriter{ResponseWriter: w}
	conn, err := s.upgrader.Upgrade(bw, r, hdr)
	if err != nil {
		return nil, nil, err
	}
	bw.conn.mu.Lock()
	bw.conn.framing = true
	bw.conn.mu.Unlock()
	return conn, bw.conn, nil
}

// rearm says whether a socket whose deadline is armed must be given want.
// Every frame asks for "now + timeout"; re-arming the runtime's timer for
// each would cost more than a small frame's write, so a deadline that is
// later than the armed one by less than an eighth of the time left is
// left as it is. A frame may then time out up to that eighth early; it is
// never given longer than it asked for.
func rearm(armed, want time.Time) bool {
	switch {
	case want.IsZero() || armed.IsZero():
		return !want.Equal(armed)
	case want.Before(armed):
		return true
	default:
		return want.Sub(armed) > time.Until(want)/8
	}
}
