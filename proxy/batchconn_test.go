package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// recordingConn records each Write, as the system calls the proxy makes.
type recordingConn struct {
	net.Conn
	mu        sync.Mutex
	writes    [][]byte
	deadlines int
	fail      error
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return 0, c.fail
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *recordingConn) SetWriteDeadline(time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadlines++
	return nil
}

func TestBatchConnSendsABatchInOneWrite(t *testing.T) {
	t.Parallel()
	rc := &recordingConn{}
	c := &batchConn{Conn: rc}
	if _, err := c.Write([]byte("unbatched")); err != nil {
		t.Fatal(err)
	}
	c.startBatch()
	for _, s := range []string{"one", "two", "three"} {
		_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.batched(); got != len("onetwothree") {
		t.Fatalf("batched %d bytes, want %d", got, len("onetwothree"))
	}
	if len(rc.writes) != 1 {
		t.Fatalf("%d writes reached the socket before the flush, want 1 (the unbatched one)", len(rc.writes))
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	want := []string{"unbatched", "onetwothree"}
	if len(rc.writes) != len(want) {
		t.Fatalf("writes %q, want %q", rc.writes, want)
	}
	for i, w := range want {
		if string(rc.writes[i]) != w {
			t.Fatalf("write %d = %q, want %q", i, rc.writes[i], w)
		}
	}
	// The three frames' deadlines, all about a minute away, arm the
	// socket once.
	if rc.deadlines != 1 {
		t.Fatalf("socket deadline set %d times, want 1", rc.deadlines)
	}
	if err := c.flush(); err != nil || len(rc.writes) != 2 {
		t.Fatalf("flush without a batch: %v, %d writes", err, len(rc.writes))
	}
}

func TestBatchConnFailureIsFinal(t *testing.T) {
	t.Parallel()
	boom := errors.New("connection reset")
	rc := &recordingConn{fail: boom}
	c := &batchConn{Conn: rc}
	c.startBatch()
	if _, err := c.Write([]byte("frame")); err != nil {
		t.Fatalf("a batched write fails only at the flush: %v", err)
	}
	if err := c.flush(); !errors.Is(err, boom) {
		t.Fatalf("flush: %v, want %v", err, boom)
	}
	rc.fail = nil
	// Half a frame may have reached the client: nothing may follow it.
	if _, err := c.Write([]byte("close frame")); !errors.Is(err, boom) {
		t.Fatalf("write after a failed flush: %v, want %v", err, boom)
	}
	if len(rc.writes) != 0 {
		t.Fatalf("%d writes after the failure reached the socket", len(rc.writes))
	}
}

func TestRearm(t *testing.T) {
	t.Parallel()
	now := time.Now()
	in := func(d time.Duration) time.Time { return now.Add(d) }
	for _, c := range []struct {
		name        string
		armed, want time.Time
		shouldRearm bool
	}{
		{"first deadline", time.Time{}, in(time.Minute), true},
		{"cleared", in(time.Minute), time.Time{}, true},
		{"still none", time.Time{}, time.Time{}, false},
		{"tighter", in(time.Minute), in(5 * time.Second), true},
		{"a little later", in(time.Minute), in(time.Minute + time.Second), false},
		{"much later", in(time.Minute), in(2 * time.Minute), true},
		{"armed one already past", in(-time.Second), in(time.Minute), true},
	} {
		if got := rearm(c.armed, c.want); got != c.shouldRearm {
			t.Errorf("%s: rearm = %v, want %v", c.name, got, c.shouldRearm)
		}
	}
}

// writeFrame's frames are what gorilla reads as binary messages, whatever
// the length encoding, in a batch or not, beside gorilla's own control
// frames; once gorilla has sent a close frame no data frame follows it.
func TestWriteFrameIsWhatGorillaReads(t *testing.T) {
	t.Parallel()
	sizes := []int{0, 1, 124, 125, 126, 127, 4095, 65534, 65535, 70000}
	payload := func(n int) []byte { return bytes.Repeat([]byte{byte(n)}, n) }
	afterClose := make(chan error, 1)
	s := &Server{upgrader: websocket.Upgrader{}}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, out, err := s.upgradeBatching(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		for i, n := range sizes {
			batch := i%2 == 1
			if batch {
				out.startBatch()
			}
			if err := out.writeFrame(byte(i), payload(n)); err != nil {
				t.Error(err)
			}
			if batch {
				_ = out.flush()
			}
			_ = conn.WriteControl(websocket.PingMessage, []byte("between"), time.Now().Add(5*time.Second))
		}
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(5*time.Second))
		afterClose <- out.writeFrame(9, []byte("late"))
		conn.ReadMessage() //nolint:errcheck // until the client goes
	}))
	defer hs.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	pings := 0
	ws.SetPingHandler(func(data string) error {
		if data == "between" {
			pings++
		}
		return nil
	})
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i, n := range sizes {
		mt, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if mt != websocket.BinaryMessage || len(msg) != 1+n || msg[0] != byte(i) || !bytes.Equal(msg[1:], payload(n)) {
			t.Fatalf("frame %d: type %d, %d bytes, want binary, channel %d and %d bytes", i, mt, len(msg), i, n)
		}
	}
	_, msg, err := ws.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 4000 {
		t.Fatalf("after the frames: %q %v, want close 4000", msg, err)
	}
	if pings != len(sizes) {
		t.Errorf("%d pings read between the frames, want %d", pings, len(sizes))
	}
	if err := <-afterClose; !errors.Is(err, websocket.ErrCloseSent) {
		t.Errorf("a data frame after gorilla's close frame: %v, want ErrCloseSent", err)
	}
}
