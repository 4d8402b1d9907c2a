package localexec

import (
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// hangups tells a session that its peer closed the connection even while
// nothing reads the connection. The stream servers read the connection in
// the same goroutine that hands stdin to the process, so while a process
// does not read its stdin and the client keeps sending, a read never
// returns the disconnect and the process would outlive its client. The
// kernel flags the peer's FIN (EPOLLRDHUP) or a reset (EPOLLHUP, EPOLLERR)
// whatever data is still queued; one epoll instance watches every session.
type hangups struct {
	once    sync.Once
	epfd    int
	err     error
	mu      sync.Mutex
	watch   map[int32]func() // by the watcher's own duplicate of the socket
	running bool             // the waiting goroutine runs
}

var hangupWatcher hangups

// add calls onHangup once when c's peer hangs up; the returned stop ends
// the watch (call it once the connection is closed). Connections that are
// not sockets are not watched.
func (h *hangups) add(c net.Conn, onHangup func()) (stop func()) {
	h.once.Do(h.start)
	sc, ok := c.(syscall.Conn)
	if h.err != nil || !ok {
		return func() {}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	fd := -1
	_ = raw.Control(func(s uintptr) { fd, err = unix.Dup(int(s)) })
	if err != nil || fd < 0 {
		return func() {}
	}
	h.mu.Lock()
	h.watch[int32(fd)] = onHangup
	if !h.running {
		h.running = true
		go h.wait()
	}
	h.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(h.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		h.remove(int32(fd))
		return func() {}
	}
	var stopOnce sync.Once
	return func() { stopOnce.Do(func() { h.remove(int32(fd)) }) }
}

func (h *hangups) remove(fd int32) {
	h.mu.Lock()
	_, ok := h.watch[fd]
	delete(h.watch, fd)
	h.mu.Unlock()
	if ok {
		_ = unix.EpollCtl(h.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
		unix.Close(int(fd))
	}
}

func (h *hangups) start() {
	h.epfd, h.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	h.watch = make(map[int32]func())
}

// wait runs while connections are watched: it ends within a wait period of
// the last one going, so that an idle backend runs no goroutine of it.
func (h *hangups) wait() {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(h.epfd, events, 100)
		if err != nil && err != unix.EINTR {
			n = 0
		}
		h.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			if f := h.watch[ev.Fd]; f != nil {
				go f()
			}
		}
		if len(h.watch) == 0 {
			h.running = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
}
