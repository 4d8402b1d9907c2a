package proxy

import (
	"context"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
)

// FrameStreamer is an Executor that can also relay the upstream's frames
// without client-go's demultiplexer (exec.Dialer.StreamFrames).
type FrameStreamer interface {
	StreamFrames(ctx context.Context, t exec.Target, s exec.Streams) (exec.Result, error)
}

// useFrameRelay is the one place the path is chosen. Frames are relayed
// when --frame-relay=auto and the executor can, except for sessions whose
// token claims resumable: resume keeps the demultiplexed path it is built
// on. The relayed upstream frames go through the session's own output
// writers (frameWriter → writeProcessOutput), so re-cutting to
// --max-frame-size, whole UTF-8 characters, no empty frames, recording
// and observer taps, the status after the last byte and every limit are
// the demux path's code, not a copy.
func (ss *session) useFrameRelay() (FrameStreamer, bool) {
	if !ss.cfg.FrameRelay || ss.claims.Resumable {
		return nil, false
	}
	fs, ok := ss.cfg.Executor.(FrameStreamer)
	return fs, ok
}

// stream runs the session's exec on the chosen path.
func (ss *session) stream(ctx context.Context, t exec.Target, s exec.Streams) (exec.Result, error) {
	if fs, ok := ss.useFrameRelay(); ok {
		return fs.StreamFrames(ctx, t, s)
	}
	return ss.cfg.Executor.Stream(ctx, t, s)
}
