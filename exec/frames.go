package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	gwebsocket "github.com/gorilla/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	streamproto "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/websocket"
	utilexec "k8s.io/client-go/util/exec"
)

// Channel numbers of the channel.k8s.io protocols.
const (
	frameStdin  = 0
	frameStdout = 1
	frameStderr = 2
	frameStatus = 3
	frameResize = 4
	frameClose  = 255 // v5 only
)

// StreamFrames is Stream without client-go's demultiplexer: the upstream
// exec is one WebSocket channel-protocol connection (client-go's
// transport/websocket gives it with the cluster's TLS and auth) whose
// frames are handed straight to the caller's writers, one Write per
// frame, in the goroutine that called StreamFrames; no pipe, no copy
// goroutine per stream. The contract is Stream's: it returns once every
// output frame before the status has been written, with the same errors.
//
// Over v4 (--exec-transport=websocket toward an upstream without v5) a
// stdin EOF cannot be sent: v4 has no CLOSE channel, so the process's stdin
// stays open until the session ends (as with client-go's v4 executor).
// A transport of spdy, or auto whose WebSocket upgrade is refused, runs
// Stream (client-go's remotecommand over SPDY).
func (d *Dialer) StreamFrames(ctx context.Context, t Target, s Streams) (Result, error) {
	if d.transport == TransportSPDY {
		return d.Stream(ctx, t, s)
	}
	if err := check(t, s); err != nil {
		return Result{Transport: TransportWebSocket}, err
	}
	res, err, fallback := d.streamFrames(ctx, t, s)
	if fallback {
		return d.spdyFallback(ctx, t, s)
	}
	var exit utilexec.CodeExitError
	if err != nil && ctx.Err() != nil && !errors.As(err, &exit) {
		err = ctx.Err()
	}
	return res, err
}

// spdyFallback runs t over SPDY after a refused WebSocket upgrade.
func (d *Dialer) spdyFallback(ctx context.Context, t Target, s Streams) (Result, error) {
	opts := streamOptions(t, s)
	inner, done := d.tracking(ctx)
	defer done()
	sp := &trackedSPDY{d: d, u: d.URL(t)}
	err := explainHandshake(inner, sp.StreamWithContext(inner, opts))
	var exit utilexec.CodeExitError
	if err != nil && ctx.Err() != nil && !errors.As(err, &exit) {
		err = ctx.Err()
	}
	return Result{Transport: TransportSPDY}, err
}

func (d *Dialer) streamFrames(ctx context.Context, t Target, s Streams) (res Result, err error, fallback bool) {
	res = Result{Transport: TransportWebSocket}
	cfg := d.configFor(ctx)
	rt, holder, err := upgraderFor(cfg)
	if err != nil {
		return res, err, false
	}
	// Ending the session resets the connection, also mid-handshake: a
	// polite close could wait on a peer that does not read.
	inner, closeConns := d.tracking(ctx)
	defer closeConns()
	req, err := http.NewRequestWithContext(inner, http.MethodGet, d.URL(t).String(), nil)
	if err != nil {
		return res, err, false
	}
	protocols := []string{streamproto.StreamProtocolV5Name}
	if d.transport == TransportWebSocket {
		protocols = append(protocols, streamproto.StreamProtocolV4Name)
	}
	conn, err := websocket.Negotiate(rt, holder, req, protocols...)
	if err != nil {
		return res, explainHandshake(inner, err), d.transport == TransportAuto && shouldFallback(err)
	}
	fc := &frameConn{conn: conn, v5: conn.Subprotocol() == streamproto.StreamProtocolV5Name}
	if t.Stdin {
		go fc.pumpStdin(s.Stdin)
	}
	if t.TTY && s.Sizes != nil {
		go fc.pumpSizes(s.Sizes)
	}
	return res, fc.readOutput(t, s), false
}

// frameConn is the upstream connection; writes (stdin, resize, close) are
// serialised, reads happen in StreamFrames' goroutine only.
type frameConn struct {
	conn *gwebsocket.Conn
	v5   bool
	wmu  sync.Mutex
	buf  []byte
}

func (fc *frameConn) write(channel byte, p []byte) error {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.buf = append(append(fc.buf[:0], channel), p...)
	return fc.conn.WriteMessage(gwebsocket.BinaryMessage, fc.buf)
}

// pumpStdin copies stdin into channel-0 frames; its EOF is a v5 CLOSE
// frame for channel 0. It returns on the first failed write or read.
func (fc *frameConn) pumpStdin(r io.Reader) {
	var err error
	if sp, ok := r.(StdinPusher); ok {
		err = sp.PushTo(stdinFrames{fc})
	} else {
		// io.Copy uses a WriterTo's own buffers when r has them.
		_, err = io.Copy(stdinFrames{fc}, r)
	}
	if err == nil && fc.v5 {
		_ = fc.write(frameClose, []byte{frameStdin})
	}
}

// maxStdinFrame is the largest stdin frame sent upstream: what the copy
// buffer of client-go's executors gives one.
const maxStdinFrame = 32 << 10

// stdinFrames writes each Write as channel-0 frames of at most
// maxStdinFrame bytes.
type stdinFrames struct{ fc *frameConn }

func (w stdinFrames) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := min(len(p)-n, maxStdinFrame)
		if err := w.fc.write(frameStdin, p[n:n+k]); err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

// pumpSizes sends each terminal size as a channel-4 frame in the JSON
// client-go and the kubelet use.
func (fc *frameConn) pumpSizes(q remotecommand.TerminalSizeQueue) {
	for {
		size := q.Next()
		if size == nil {
			return
		}
		b, _ := json.Marshal(struct{ Width, Height uint16 }{size.Width, size.Height})
		if fc.write(frameResize, b) != nil {
			return
		}
	}
}

// readOutput hands output frames to the writers until the status frame,
// then decodes the status as client-go's v4 error decoder does.
func (fc *frameConn) readOutput(t Target, s Streams) error {
	// One buffer for every frame: ReadMessage's io.ReadAll allocated each
	// message anew and regrew it from 512 bytes, about three bytes of garbage
	// per byte relayed (pprof, docs/benchmarks.md). Writers do not keep p.
	var buf bytes.Buffer
	for {
		mt, r, err := fc.conn.NextReader()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrNoStatus, err)
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return fmt.Errorf("%w: %v", ErrNoStatus, err)
		}
		msg := buf.Bytes()
		if mt != gwebsocket.BinaryMessage || len(msg) == 0 {
			continue
		}
		payload := msg[1:]
		switch msg[0] {
		case frameStdout:
			if t.Stdout && len(payload) > 0 {
				if _, err := s.Stdout.Write(payload); err != nil {
					return err
				}
			}
		case frameStderr:
			if SeparateStderr(t.TTY, t.Stderr) && len(payload) > 0 {
				if _, err := s.Stderr.Write(payload); err != nil {
					return err
				}
			}
		case frameStatus:
			return decodeStatus(payload)
		}
	}
}

// decodeStatus turns a v4/v5 status frame into Stream's error: nil for
// success, a CodeExitError for a non-zero exit code.
func decodeStatus(p []byte) error {
	var st metav1.Status
	if err := json.Unmarshal(p, &st); err != nil {
		return fmt.Errorf("error stream protocol error: %v in %q", err, string(p))
	}
	if st.Status == metav1.StatusSuccess {
		return nil
	}
	if st.Reason == streamproto.NonZeroExitCodeReason && st.Details != nil {
		for _, c := range st.Details.Causes {
			if c.Type != streamproto.ExitCodeCauseType {
				continue
			}
			var rc int
			if _, err := fmt.Sscanf(c.Message, "%d", &rc); err != nil {
				return fmt.Errorf("error stream protocol error: invalid exit code value %q", c.Message)
			}
			return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with non-zero exit code: %s", st.Message), Code: rc}
		}
	}
	return fmt.Errorf("error executing remote command: %s", st.Message)
}

// DecodeStatus is decodeStatus for clients outside this package that read
// the channel-3 status themselves (the shell's resuming client).
func DecodeStatus(p []byte) error { return decodeStatus(p) }
