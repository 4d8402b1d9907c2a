package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// protocolSets are the offers client-go makes: v5 (its default) and a
// client that only knows v4.
var protocolSets = map[string][]string{
	"v5": {"v5.channel.k8s.io", "v4.channel.k8s.io"},
	"v4": {"v4.channel.k8s.io"},
}

// clientGoExec runs one session through the proxy with client-go's
// WebSocket executor, as kubectl would against an API server.
func (e *env) clientGoExec(ctx context.Context, protocols []string, c hmac.Claims, opts remotecommand.StreamOptions) error {
	e.t.Helper()
	return e.clientGoExecToken(ctx, protocols, c, e.mint(c), opts)
}

func (e *env) clientGoExecToken(ctx context.Context, protocols []string, c hmac.Claims, tok string, opts remotecommand.StreamOptions) error {
	e.t.Helper()
	cfg := &rest.Config{Host: "http://" + e.Addr, BearerToken: tok}
	ex, err := remotecommand.NewWebSocketExecutorForProtocols(cfg, "GET", testenv.ExecURL(e.Addr, c, opts.Stderr != nil), protocols...)
	if err != nil {
		e.t.Fatal(err)
	}
	return ex.StreamWithContext(ctx, opts)
}

func TestClientGo(t *testing.T) {
	e := startEnv(t, envOptions{})
	for name, protos := range protocolSets {
		t.Run(name, func(t *testing.T) {
			t.Run("tty echo", func(t *testing.T) {
				ctx := testenv.Context(t, 30*time.Second)
				c := e.claims("/bin/sh")
				c.TTY, c.Stdin = true, true
				stdinR, stdinW := io.Pipe()
				out := &testenv.WatchBuffer{}
				done := make(chan error, 1)
				go func() {
					done <- e.clientGoExec(ctx, protos, c, remotecommand.StreamOptions{
						Stdin: stdinR, Stdout: out, Tty: true,
						TerminalSizeQueue: testenv.NewSizeQueue(ctx, remotecommand.TerminalSize{Width: 80, Height: 24}),
					})
				}()
				io.WriteString(stdinW, "echo hello-$((40+2))\r")
				out.WaitFor(t, "hello-42", 20*time.Second)
				io.WriteString(stdinW, "exit 0\r")
				if err := <-done; err != nil {
					t.Fatalf("session ended with %v; output %q", err, out.String())
				}
			})
			t.Run("stdout and stderr split", func(t *testing.T) {
				ctx := testenv.Context(t, 30*time.Second)
				var stdout, stderr bytes.Buffer
				err := e.clientGoExec(ctx, protos, e.claims("/bin/sh", "-c", "echo to-out; echo to-err >&2"),
					remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
				if err != nil {
					t.Fatal(err)
				}
				if stdout.String() != "to-out\n" || stderr.String() != "to-err\n" {
					t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
				}
			})
			t.Run("exit code", func(t *testing.T) {
				ctx := testenv.Context(t, 30*time.Second)
				var stdout bytes.Buffer
				err := e.clientGoExec(ctx, protos, e.claims("/bin/sh", "-c", "echo bye; exit 3"),
					remotecommand.StreamOptions{Stdout: &stdout, Stderr: io.Discard})
				var codeErr utilexec.CodeExitError
				if !errors.As(err, &codeErr) || codeErr.ExitStatus() != 3 {
					t.Fatalf("err = %v (%T), want exit code 3", err, err)
				}
				if stdout.String() != "bye\n" {
					t.Fatalf("stdout %q", stdout.String())
				}
			})
			t.Run("initial size and resize", func(t *testing.T) {
				ctx := testenv.Context(t, 30*time.Second)
				c := e.claims("/bin/sh")
				c.TTY, c.Stdin = true, true
				sizes := testenv.NewSizeQueue(ctx, remotecommand.TerminalSize{Width: 123, Height: 45})
				stdinR, stdinW := io.Pipe()
				out := &testenv.WatchBuffer{}
				done := make(chan error, 1)
				go func() {
					done <- e.clientGoExec(ctx, protos, c, remotecommand.StreamOptions{
						Stdin: stdinR, Stdout: out, Tty: true, TerminalSizeQueue: sizes})
				}()
				io.WriteString(stdinW, "stty size\r")
				out.WaitFor(t, "45 123", 20*time.Second)
				sizes.Resize(remotecommand.TerminalSize{Width: 100, Height: 30})
				// The resize and the command travel on different channels;
				// ask until the new size shows rather than assume an order.
				deadline := time.Now().Add(10 * time.Second)
				for !strings.Contains(out.String(), "30 100") {
					if time.Now().After(deadline) {
						t.Fatalf("resize to 100x30 never seen; output %q", out.String())
					}
					io.WriteString(stdinW, "stty size\r")
					select { // the next output, or a second
					case <-out.Changes():
					case <-time.After(time.Second):
					}
				}
				io.WriteString(stdinW, "exit\r")
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			})
			t.Run("seq byte-exact", func(t *testing.T) {
				want := seqOutput(200000)
				for i := range 3 {
					ctx := testenv.Context(t, 60*time.Second)
					var stdout bytes.Buffer
					if err := e.clientGoExec(ctx, protos, e.claims("seq", "1", "200000"),
						remotecommand.StreamOptions{Stdout: &stdout, Stderr: io.Discard}); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(stdout.Bytes(), want) {
						t.Fatalf("run %d: got %d bytes, want %d", i, stdout.Len(), len(want))
					}
				}
			})
		})
	}
	t.Run("v5 stdin half-close", func(t *testing.T) {
		ctx := testenv.Context(t, 30*time.Second)
		c := e.claims("cat")
		c.Stdin = true
		var stdout bytes.Buffer
		err := e.clientGoExec(ctx, protocolSets["v5"], c, remotecommand.StreamOptions{
			Stdin: strings.NewReader("every byte\nof stdin\n"), Stdout: &stdout, Stderr: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		if stdout.String() != "every byte\nof stdin\n" {
			t.Fatalf("stdout %q", stdout.String())
		}
	})
}

// TestSeq2MillionByteExact is kubernetes#124571: the last bytes of a
// process's output must arrive before its exit status, every time.
func TestSeq2MillionByteExact(t *testing.T) {
	runs := 20
	if testing.Short() {
		runs = 3
	}
	e := startEnv(t, envOptions{})
	want := seqOutput(2000000)
	for i := range runs {
		ctx := testenv.Context(t, 120*time.Second)
		var stdout bytes.Buffer
		if err := e.clientGoExec(ctx, protocolSets["v5"], e.claims("seq", "1", "2000000"),
			remotecommand.StreamOptions{Stdout: &stdout, Stderr: io.Discard}); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if !bytes.Equal(stdout.Bytes(), want) {
			t.Fatalf("run %d: got %d bytes, want %d", i, stdout.Len(), len(want))
		}
	}
}

func seqOutput(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// TestForcedTransports runs sessions with each exec transport forced on
// the proxy's side (the local backend, like a kubelet, speaks WebSocket
// v4 and SPDY; auto is covered by every other test).
func TestForcedTransports(t *testing.T) {
	for _, transport := range []string{"websocket", "spdy"} {
		t.Run(transport, func(t *testing.T) {
			e := startEnv(t, envOptions{transport: transport})
			ctx := testenv.Context(t, 60*time.Second)
			var stdout bytes.Buffer
			err := e.clientGoExec(ctx, protocolSets["v5"], e.claims("sh", "-c", "seq 1 100000; exit 3"),
				remotecommand.StreamOptions{Stdout: &stdout, Stderr: io.Discard})
			var codeErr utilexec.CodeExitError
			if !errors.As(err, &codeErr) || codeErr.ExitStatus() != 3 {
				t.Fatalf("err = %v, want exit code 3", err)
			}
			if !bytes.Equal(stdout.Bytes(), seqOutput(100000)) {
				t.Fatalf("got %d bytes, want %d", stdout.Len(), len(seqOutput(100000)))
			}
			closed := e.WaitLog(10*time.Second, "session closed", nil)
			if closed["transport"] != transport {
				t.Fatalf("session carried by %v, want %s", closed["transport"], transport)
			}
		})
	}
}
