package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/exec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/recording"
)

// recordingTargets are issue 14's "recording never slows the session
// measurably", as issue 19 puts it: within 10% of off, for throughput and
// for the echo at p50 (on/off, not an excess: both paths are proxies).
// CPU and p99 are reported without a target.
var recordingTargets = targets{bulk: 0.90, echoP50: 1.10}

// BenchmarkRecording: bulk and tty echo through two proxies side by side,
// interleaved, with the same flags (WebSocket upstream, frame relay) but
// for --recording=best-effort --recording-dir on one of them. The bulk
// output is printable text (a recording of zero bytes would be six times
// its size in JSON escapes, which no terminal produces); each recorded
// bulk session is checked to have left a complete recording (its end
// marker written) at least as large as its output, then removed, before
// the next round.
func BenchmarkRecording(b *testing.B) {
	e := newEnv(b)
	dir := b.TempDir()
	off := e.startProxy(b, exec.TransportWebSocket, "--frame-relay=auto")
	on := e.startProxy(b, exec.TransportWebSocket, "--frame-relay=auto", "--recording=best-effort", "--recording-dir", dir)
	st := stack{
		group: groupRec, names: [nPaths]string{"-", "off", "on"}, t: recordingTargets,
		paths: [nPaths]path{nil, off.path(e), on.path(e)},
		mids:  [nPaths]int{0, off.Process().Pid, on.Process().Pid},
		back:  e.backend.proc.Process().Pid, proxy: on,
		bulkCmd: text,
		after: func(k int, size int64) error {
			if k != proxied {
				return nil
			}
			return takeRecording(dir, size)
		},
	}
	results.note("recording: --recording=best-effort --recording-dir (a local directory, no upload) on one proxy, off on the other; bulk output is printable text")
	b.Run("bulk", func(b *testing.B) { bulk(b, st) })
	b.Run("echo", func(b *testing.B) { echo(b, st) })
}

// text is a bulk command printing size bytes of text lines.
func text(size int64) []string {
	return []string{"sh", "-c", fmt.Sprintf("yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ | head -c %d", size)}
}

// takeRecording waits for the one recording in dir to be complete (its
// end marker written: the proxy closes it as the session ends, which may
// be after the client saw the end) and at least size bytes, and removes it.
func takeRecording(dir string, size int64) error {
	var done string
	err := poll.Until(context.Background(), poll.Interval, 30*time.Second, func(context.Context) error {
		files, err := filepath.Glob(filepath.Join(dir, "*"+recording.Ext))
		if err != nil || len(files) != 1 {
			return fmt.Errorf("%d recordings in the spool, want 1 (%v)", len(files), err)
		}
		tail, n, err := fileTail(files[0], 256)
		if err != nil {
			return err
		}
		// The end marker is an "m" event whose data is a JSON object in
		// a JSON string.
		if !bytes.Contains(tail, []byte(`,"m","{\"event\":\"end\"`)) {
			return fmt.Errorf("%s: %d bytes, no end marker yet", files[0], n)
		}
		if n < size {
			return fmt.Errorf("%s: complete but %d bytes for %d bytes of output", files[0], n, size)
		}
		done = files[0]
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording: %w", err)
	}
	return os.Remove(done)
}

// fileTail is the last n bytes of a file and its size.
func fileTail(name string, n int64) ([]byte, int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	off := max(fi.Size()-n, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	return b, fi.Size(), err
}
