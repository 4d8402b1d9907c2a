package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// seqLines is the output size that made kubectl lose its tail
// (kubernetes#124571): every byte must arrive, in order, before the status.
const seqLines = 2000000

// seqDigest is the SHA-256 and length of `seq 1 n` with the given line end.
func seqDigest(n int, eol string) ([32]byte, int) {
	h := sha256.New()
	total := 0
	var b []byte
	for i := 1; i <= n; i++ {
		b = strconv.AppendInt(b[:0], int64(i), 10)
		b = append(b, eol...)
		h.Write(b)
		total += len(b)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, total
}

// digestWriter hashes and counts what it is given.
type digestWriter struct {
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int
}

func newDigestWriter() *digestWriter { return &digestWriter{h: sha256.New()} }

func (d *digestWriter) Write(p []byte) (int, error) {
	d.n += len(p)
	return d.h.Write(p)
}

func (d *digestWriter) sum() [32]byte {
	var s [32]byte
	copy(s[:], d.h.Sum(nil))
	return s
}

// clientGoExec runs a session through the proxy with client-go's WebSocket
// executor (v5 first, as kubectl).
func clientGoExec(ctx context.Context, t *testing.T, p *proxyProc, c hmac.Claims, opts remotecommand.StreamOptions) error {
	t.Helper()
	cfg := &rest.Config{Host: "http://" + p.Addr, BearerToken: testenv.Mint(t, p.signer, c)}
	ex, err := remotecommand.NewWebSocketExecutor(cfg, "GET", testenv.ExecURL(p.Addr, c, opts.Stderr != nil))
	if err != nil {
		t.Fatal(err)
	}
	return ex.StreamWithContext(ctx, opts)
}

// TestExecThroughRealAPIServer is issue 4's test 4: the proxy, as its
// ServiceAccount, against a real kube-apiserver that translates WebSocket
// v5 to SPDY toward the node's kubelet (here the upstream kubelet streaming
// code over TLS, running local processes), driven by a guacd-shaped client
// and by client-go's WebSocket executor.
func TestExecThroughRealAPIServer(t *testing.T) {
	for _, transport := range []string{"auto", "spdy"} {
		t.Run(transport, func(t *testing.T) {
			p := startProxy(t, proxyOptions{transport: transport})
			// auto dials WebSocket first; the real API server accepts it.
			wantTransport := map[string]string{"auto": "websocket", "spdy": "spdy"}[transport]
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
			defer cancel()

			t.Run("guacd-shell", func(t *testing.T) {
				g, resp, err := testenv.DialGuacd(p.Addr, workloadNamespace, testenv.Mint(t, p.signer, p.claims(true, "/bin/sh")), workloadContainer, "/bin/sh")
				if err != nil {
					t.Fatalf("guacd upgrade: %v (response %v)", err, resp)
				}
				if got := g.Conn().Subprotocol(); got != "v4.channel.k8s.io" {
					t.Errorf("negotiated %q, want v4.channel.k8s.io", got)
				}
				g.Resize(t, 100, 30)
				g.Send(t, "stty size\r")
				g.WaitOutput(t, "30 100", time.Minute)
				// A line typed in pieces, as guacd forwards keystrokes.
				g.Send(t, "e")
				g.Send(t, "cho guacd-$((6*7))\r")
				g.WaitOutput(t, "guacd-42", time.Minute)
				g.Resize(t, 132, 43)
				g.WaitTerminalSize(t, 43, 132, time.Minute)
				g.Send(t, "exit 7\r")
				err = g.WaitEnd(t, time.Minute)
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
					t.Errorf("session end: %v, want a normal close frame", err)
				}
				if st := g.ExitStatus(); !strings.Contains(st, `"reason":"NonZeroExitCode"`) || !strings.Contains(st, `"message":"7"`) {
					t.Errorf("status on channel 3: %s, want NonZeroExitCode with exit code 7", st)
				}
				if err := g.Problems(); err != nil {
					t.Error(err)
				}
			})

			t.Run("guacd-seq", func(t *testing.T) {
				cmd := "seq 1 " + strconv.Itoa(seqLines)
				g, resp, err := testenv.DialGuacd(p.Addr, workloadNamespace, testenv.Mint(t, p.signer, p.claims(true, strings.Fields(cmd)...)), workloadContainer, cmd)
				if err != nil {
					t.Fatalf("guacd upgrade: %v (response %v)", err, resp)
				}
				g.Resize(t, 80, 24)
				err = g.WaitEnd(t, 3*time.Minute)
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
					t.Errorf("session end: %v, want a normal close frame after the output", err)
				}
				// A tty turns \n into \r\n; then --exit-notice=auto (the
				// default) tells the guacd user the exit code.
				want, wantLen := seqDigest(seqLines, "\r\n")
				got, notice := strings.CutSuffix(g.Output(), "\r\n[k8s-ws-proxy] process exited with code 0\r\n")
				if !notice {
					t.Errorf("guacd output ends %q, want the exit notice", testenv.Tail(g.Output(), 60))
				}
				if len(got) != wantLen || sha256.Sum256([]byte(got)) != want {
					t.Errorf("guacd received %d bytes (ends %q), want %d bytes of seq output", len(got), testenv.Tail(got, 40), wantLen)
				}
				if err := g.Problems(); err != nil {
					t.Error(err)
				}
			})

			t.Run("client-go", func(t *testing.T) {
				// stdout and stderr apart, and an exit code.
				var out, errOut bytes.Buffer
				c := p.claims(false, "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3")
				c.Stdin = false
				err := clientGoExec(ctx, t, p, c, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
				var exitErr utilexec.CodeExitError
				if !errors.As(err, &exitErr) || exitErr.Code != 3 {
					t.Errorf("exit: %v, want exit code 3", err)
				}
				if out.String() != "to-stdout\n" || errOut.String() != "to-stderr\n" {
					t.Errorf("stdout %q, stderr %q", out.String(), errOut.String())
				}

				// Echo through stdin, and EOF ends the command.
				out.Reset()
				c = p.claims(false, "cat")
				err = clientGoExec(ctx, t, p, c, remotecommand.StreamOptions{Stdin: strings.NewReader("echoed through stdin\n"), Stdout: &out})
				if err != nil || out.String() != "echoed through stdin\n" {
					t.Errorf("cat: %q, %v", out.String(), err)
				}

				// The initial terminal size reaches the process.
				out.Reset()
				c = p.claims(true, "stty", "size")
				sizes := testenv.NewSizeQueue(ctx, remotecommand.TerminalSize{Width: 123, Height: 45})
				err = clientGoExec(ctx, t, p, c, remotecommand.StreamOptions{Stdin: strings.NewReader(""), Stdout: &out, Tty: true, TerminalSizeQueue: sizes})
				if err != nil || strings.TrimSpace(out.String()) != "45 123" {
					t.Errorf("stty size: %q, %v; want 45 123", out.String(), err)
				}

				// seq byte-exact.
				d := newDigestWriter()
				c = p.claims(false, "seq", "1", strconv.Itoa(seqLines))
				c.Stdin = false
				if err := clientGoExec(ctx, t, p, c, remotecommand.StreamOptions{Stdout: d}); err != nil {
					t.Errorf("seq: %v", err)
				}
				want, wantLen := seqDigest(seqLines, "\n")
				if d.n != wantLen || d.sum() != want {
					t.Errorf("seq through client-go: %d bytes, want %d bytes of seq output", d.n, wantLen)
				}
			})

			// Every session went to the API server over the expected
			// transport.
			const sessions = 6 // guacd-shell, guacd-seq and four client-go runs
			p.WaitLog(time.Minute, "session closed", func(map[string]any) bool { return len(p.sessionsClosed()) >= sessions })
			for _, s := range p.sessionsClosed() {
				if s["transport"] != wantTransport {
					t.Errorf("session %v used transport %v, want %s", s["command"], s["transport"], wantTransport)
				}
			}
		})
	}
}
