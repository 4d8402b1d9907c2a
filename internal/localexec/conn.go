package localexec

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
)

// hijackNotifier wraps a ResponseWriter so that the connection the upgrade
// hijacks reports when it dies. After a hijack net/http no longer watches the
// connection and the request context is not cancelled when the client goes
// away; without this, a process with nothing to write would outlive its
// client forever.
type hijackNotifier struct {
	http.ResponseWriter
	onClose func()
}

// Hijack returns the connection wrapped, and a buffered reader/writer over
// the wrapper, keeping whatever the server had already buffered.
func (h *hijackNotifier) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("localexec: connection cannot be hijacked")
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	wc := &notifyConn{Conn: c, onClose: h.onClose}
	wc.unwatch = hangupWatcher.add(c, wc.closed)
	var r io.Reader = wc
	if n := brw.Reader.Buffered(); n > 0 {
		pre, _ := brw.Reader.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(pre)), wc)
	}
	return wc, bufio.NewReadWriter(bufio.NewReader(r), bufio.NewWriter(wc)), nil
}

// Flush keeps http.Flusher available to the upgraders' error paths.
func (h *hijackNotifier) Flush() {
	if f, ok := h.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// notifyConn calls onClose once, when a read fails (the peer closed or reset
// the connection) or the connection is closed locally. Both stream servers
// read the connection continuously, so a read error is the disconnect.
// A peer that hangs up while nothing reads is seen by hangupWatcher.
type notifyConn struct {
	net.Conn
	onClose func()
	once    sync.Once
	unwatch func()
}

func (c *notifyConn) closed() { c.once.Do(c.onClose) }

func (c *notifyConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.closed()
		// The peer is gone: nothing left to watch for, and the watch would
		// keep hangupWatcher's goroutine running until the stream server
		// gets round to Close (spdystream takes a second or more).
		c.unwatch()
	}
	return n, err
}

func (c *notifyConn) Close() error {
	c.unwatch()
	err := c.Conn.Close()
	c.closed()
	return err
}
