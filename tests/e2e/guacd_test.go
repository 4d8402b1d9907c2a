package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

func TestGuacdShapedClient(t *testing.T) {
	e := startEnv(t, envOptions{})
	c := e.claims("/bin/sh")
	c.TTY, c.Stdin = true, true
	g, resp, err := testenv.DialGuacd(e.Addr, c.Namespace, e.mint(c), c.Container, "/bin/sh")
	if err != nil {
		t.Fatalf("dial: %v (response %v)", err, resp)
	}
	if got := resp.Header.Get("Sec-Websocket-Protocol"); got != "v4.channel.k8s.io" {
		t.Fatalf("negotiated %q, want v4.channel.k8s.io", got)
	}
	// guacd's double resize on connect: real size + 1, then the real size.
	g.Resize(t, 80, 24)
	g.Send(t, "e")
	g.Send(t, "cho ready-$((6*7))\r")
	g.WaitOutput(t, "ready-42", 30*time.Second)
	// guacd's second resize may reach the shell after a command typed right
	// behind it: the final size must show.
	g.WaitTerminalSize(t, 24, 80, 30*time.Second)

	// A burst bigger than one frame: 64 KiB of output through a tty must
	// arrive whole, in frames guacd can read.
	g.Send(t, "head -c 65536 /dev/zero | tr '\\0' x; echo END-$((1+1))-BURST\r")
	g.WaitOutput(t, "END-2-BURST", 30*time.Second)
	if n := strings.Count(g.Output(), "x"); n < 65536 {
		t.Fatalf("burst lost bytes: %d of 65536", n)
	}
	// A long pasted line arrives in 1024-byte messages, as guacd sends it.
	long := strings.Repeat("y", 3000)
	g.Send(t, "echo "+long+" | wc -c\r")
	g.WaitOutput(t, "3001", 30*time.Second)

	// Remember the shell's process, then leave as guacd does.
	before := e.backend.PIDs()
	if len(before) == 0 {
		t.Fatal("backend reports no running process for the live session")
	}
	g.Drop()
	if err := g.Problems(); err != nil {
		t.Error(err)
	}
	waitFor(t, 2*time.Second, "the exec's processes are gone after guacd left", func() bool {
		return len(e.backend.PIDs()) == 0
	})
	closed := e.WaitLog(10*time.Second, "session closed", nil)
	if closed["reason"] != "client_gone" {
		t.Errorf("close reason %v, want client_gone", closed["reason"])
	}
}

func TestGuacdExitClosesCleanly(t *testing.T) {
	e := startEnv(t, envOptions{})
	c := e.claims("/bin/sh", "-c", "exit 7")
	c.TTY, c.Stdin = true, true
	// guacd 1.6.0 sends the whole command line as one value.
	g, _, err := testenv.DialGuacd(e.Addr, c.Namespace, e.mint(c), c.Container, "/bin/sh -c exit 7")
	if err != nil {
		t.Fatal(err)
	}
	// The server closes after the status.
	g.WaitEnd(t, 30*time.Second)
	if err := g.Problems(); err != nil {
		t.Fatal(err)
	}
	status := g.ExitStatus()
	if status == "" {
		t.Fatal("no status frame")
	}
	want := `"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}`
	if !strings.Contains(status, want) {
		t.Fatalf("status %s does not carry exit code 7", status)
	}
}
