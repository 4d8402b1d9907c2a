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
	watch   map[int32]watched // by registration id, never reused
	lastID  int32
	running bool // the waiting goroutine runs
	// Tests' hooks: dup duplicates a socket (dupCloexec when nil); fetched
	// runs after each EpollWait, outside the lock; dispatched after the
	// batch's callbacks have run.
	dup        func(fd int) (int, error)
	fetched    func(n int)
	dispatched func()
}

// watched is one registration: the watcher's own duplicate of the socket
// and what to call when its peer hangs up.
type watched struct {
	fd       int
	onHangup func()
}

var hangupWatcher hangups

// add calls onHangup (which must not block) from the watcher's goroutine
// when c's peer hangs up; the returned stop ends the watch (call it once
// the connection is closed). Connections that are not sockets are not
// watched.
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
	dup := h.dup
	if dup == nil {
		dup = dupCloexec
	}
	_ = raw.Control(func(s uintptr) { fd, err = dup(int(s)) })
	if err != nil || fd < 0 {
		return func() {}
	}
	// The event carries a registration id, not the descriptor: a hangup
	// that EpollWait returned just before its connection was removed must
	// not reach the next connection, whose duplicate the kernel gives the
	// same number (an exec whose WebSocket attempt was refused dials SPDY at
	// once, and the stale hangup killed the new session's process).
	h.mu.Lock()
	h.lastID++
	id := h.lastID
	h.watch[id] = watched{fd: fd, onHangup: onHangup}
	if !h.running {
		h.running = true
		go h.wait()
	}
	h.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR | unix.EPOLLET, Fd: id}
	if err := unix.EpollCtl(h.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		h.remove(id)
		return func() {}
	}
	var stopOnce sync.Once
	return func() { stopOnce.Do(func() { h.remove(id) }) }
}

// dupCloexec duplicates fd with close-on-exec set. A plain dup(2) copy is
// inherited by every process the backend starts meanwhile, and keeps the
// socket open after we close it for as long as that process lives: a
// refused WebSocket upgrade then never reached EOF, and the client that
// reads the refusal's body hung.
func dupCloexec(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}

func (h *hangups) remove(id int32) {
	h.mu.Lock()
	w, ok := h.watch[id]
	delete(h.watch, id)
	h.mu.Unlock()
	if ok {
		_ = unix.EpollCtl(h.epfd, unix.EPOLL_CTL_DEL, w.fd, nil)
		unix.Close(w.fd)
	}
}

func (h *hangups) start() {
	h.epfd, h.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	h.watch = make(map[int32]watched)
}

// wait runs while connections are watched: it ends within a wait period of
// the last one going, so that an idle backend runs no goroutine of it.
func (h *hangups) wait() {
	events := make([]unix.EpollEvent, 64)
	var hungUp []func()
	for {
		n, err := unix.EpollWait(h.epfd, events, 100)
		if err != nil && err != unix.EINTR {
			n = 0
		}
		n = max(n, 0)
		if h.fetched != nil {
			h.fetched(n)
		}
		h.mu.Lock()
		hungUp = hungUp[:0]
		for _, ev := range events[:n] {
			if w, ok := h.watch[ev.Fd]; ok {
				hungUp = append(hungUp, w.onHangup)
			}
		}
		idle := len(h.watch) == 0
		if idle {
			h.running = false
		}
		h.mu.Unlock()
		// Outside the lock: a callback may stop its own watch.
		for _, f := range hungUp {
			f()
		}
		if h.dispatched != nil {
			h.dispatched()
		}
		if idle {
			return
		}
	}
}
