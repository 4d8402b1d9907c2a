package localexec

import (
	"errors"
	"io"
	"net"
	osexec "os/exec"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair is a connected loopback TCP pair.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A hangup that EpollWait returned just before its watch was removed must
// not reach the connection registered next, whose duplicated descriptor
// gets the same number: that stale event cancelled a fresh SPDY exec
// whose WebSocket attempt had just been refused, killing its process.
func TestHangupNotDeliveredToNextConnection(t *testing.T) {
	fetched := make(chan struct{})
	release := make(chan struct{})
	dispatched := make(chan struct{}, 16)
	var held atomic.Bool // only the first event is held
	h := &hangups{
		fetched: func(n int) {
			if n > 0 && !held.Swap(true) {
				fetched <- struct{}{}
				<-release
			}
		},
		dispatched: func() { dispatched <- struct{}{} },
	}
	// B's duplicate gets the number A's had, as the kernel gives the lowest
	// free one (other free numbers would hide the reuse in a test).
	aFD := -1
	h.dup = func(fd int) (int, error) {
		n, err := dupCloexec(fd)
		if err != nil || aFD < 0 {
			aFD = n
			return n, err
		}
		defer unix.Close(n)
		return aFD, unix.Dup2(n, aFD)
	}
	ca, sa := tcpPair(t)
	cb, sb := tcpPair(t)
	firedA := make(chan struct{}, 1)
	firedB := make(chan struct{}, 1)
	stopA := h.add(sa, func() { firedA <- struct{}{} })

	ca.Close() // A's peer hangs up; the watcher holds the event
	select {
	case <-fetched:
	case <-time.After(10 * time.Second):
		t.Fatal("no hangup event for A")
	}
	stopA()
	stopB := h.add(sb, func() { firedB <- struct{}{} })
	defer stopB()
	close(release)
	waitDispatch := func() {
		t.Helper()
		select {
		case <-dispatched:
		case <-time.After(10 * time.Second):
			t.Fatal("the watcher did not dispatch its events")
		}
	}
	waitDispatch()
	select {
	case <-firedB:
		t.Fatal("A's hangup was delivered to B")
	default:
	}
	select {
	case <-firedA:
		t.Fatal("A's hangup was delivered after its watch was stopped")
	default:
	}

	// B's own hangup still arrives.
	cb.Close()
	select {
	case <-firedB:
	case <-time.After(10 * time.Second):
		t.Fatal("B's hangup was not delivered")
	}
}

// A watched connection closed by the server reaches its client as EOF even
// while a process started during the watch is still running. The watcher's
// duplicate used to be inherited by that process (dup(2) without
// close-on-exec) and held the socket open: a client reading the body of a
// refused WebSocket upgrade (gorilla reads it to EOF) hung until another
// session's process ended.
func TestWatchedSocketNotInheritedByProcesses(t *testing.T) {
	h := &hangups{}
	client, server := tcpPair(t)
	stop := h.add(server, func() {})
	child := osexec.Command("cat")
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); child.Wait() })

	stop()
	server.Close()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("client read %d bytes, %v after the server closed; want EOF (is the socket held open by the child?)", n, err)
	}
}
