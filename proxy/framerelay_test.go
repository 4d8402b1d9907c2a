package proxy

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// countingFrames counts which path each session took.
type countingFrames struct {
	d             *exec.Dialer
	frames, demux atomic.Int32
}

func (c *countingFrames) Stream(ctx context.Context, t exec.Target, s exec.Streams) (exec.Result, error) {
	c.demux.Add(1)
	return c.d.Stream(ctx, t, s)
}

func (c *countingFrames) StreamFrames(ctx context.Context, t exec.Target, s exec.Streams) (exec.Result, error) {
	c.frames.Add(1)
	return c.d.StreamFrames(ctx, t, s)
}

// newRelayHarness runs the proxy with --frame-relay=auto toward the local
// backend over WebSocket (v4: localexec has no v5, so the relay also
// translates the v5 client's frames to v4).
func newRelayHarness(t *testing.T, limit int) (*harness, *countingFrames) {
	t.Helper()
	var cf *countingFrames
	h := newHarnessVia(t, exec.TransportWebSocket, func(c *Config) {
		cf = &countingFrames{d: c.Executor.(*exec.Dialer)}
		c.Executor = cf
		c.FrameRelay = true
		if limit > 0 {
			c.MaxFrameSize = limit
		}
	})
	return h, cf
}

func TestFrameRelayRecutsToFrameLimit(t *testing.T) {
	t.Parallel()
	const limit = 100
	h, cf := newRelayHarness(t, limit)
	seqInFrames(t, h, limit)
	if cf.frames.Load() != 1 || cf.demux.Load() != 0 {
		t.Fatalf("relay %d, demux %d sessions: want the frame relay", cf.frames.Load(), cf.demux.Load())
	}
}

func TestFrameRelayKeepsUTF8WholeAndStatusLast(t *testing.T) {
	t.Parallel()
	const limit = 200
	h, cf := newRelayHarness(t, limit)
	// 3000 two-byte characters in one write, then exit 3: any cut at 199
	// payload bytes would split one.
	ws := h.dial(ProtocolV5, "sh", "-c", `i=0; s=""; while [ $i -lt 100 ]; do s="${s}ééééééééééééééééééééééééééééé"; i=$((i+1)); done; printf %s "$s"; exit 3`)
	ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	var out []byte
	var status string
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("ended with %v", err)
			}
			break
		}
		if len(msg) < 2 || len(msg) > limit {
			t.Fatalf("frame of %d bytes, limit %d and never empty", len(msg), limit)
		}
		if status != "" {
			t.Fatalf("frame on channel %d after the status", msg[0])
		}
		switch msg[0] {
		case chanStdout:
			if !utf8.Valid(msg[1:]) {
				t.Fatalf("frame splits a character: %q", msg[1:])
			}
			out = append(out, msg[1:]...)
		case chanError:
			status = string(msg[1:])
		}
	}
	if want := strings.Repeat("é", 2900); string(out) != want {
		t.Fatalf("got %d bytes, want %d", len(out), len(want))
	}
	if !strings.Contains(status, `"causes":[{"reason":"ExitCode","message":"3"}]`) {
		t.Fatalf("status %s", status)
	}
	if cf.frames.Load() != 1 {
		t.Fatal("session did not take the frame relay")
	}
}

func TestFrameRelayStdinEchoAndDrain(t *testing.T) {
	h, cf := newRelayHarness(t, 0)
	echoThenDrain(t, h)
	if cf.frames.Load() != 1 {
		t.Fatal("session did not take the frame relay")
	}
}

func TestFrameRelayChoice(t *testing.T) {
	t.Parallel()
	fs := &countingFrames{}
	for _, tc := range []struct {
		name      string
		relay     bool
		resumable bool
		exec      Executor
		want      bool
	}{
		{"auto", true, false, fs, true},
		{"off", false, false, fs, false},
		{"resumable stays on demux", true, true, fs, false},
		{"executor without frames", true, false, fakeOnlyStream{}, false},
	} {
		ss := &session{cfg: &Config{FrameRelay: tc.relay, Executor: tc.exec}, claims: &hmac.Claims{Resumable: tc.resumable}}
		if _, got := ss.useFrameRelay(); got != tc.want {
			t.Errorf("%s: relay %v, want %v", tc.name, got, tc.want)
		}
	}
}

type fakeOnlyStream struct{}

func (fakeOnlyStream) Stream(context.Context, exec.Target, exec.Streams) (exec.Result, error) {
	return exec.Result{}, nil
}
