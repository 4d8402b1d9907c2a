package localexec

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	osexec "os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// defaultSize is the terminal size used when a tty client never sends one.
var defaultSize = unix.Winsize{Col: 80, Row: 24}

// proc is one running "container" process and everything that must be torn
// down with it.
type proc struct {
	srv  *Server
	log  *slog.Logger
	cmd  *osexec.Cmd
	pid  int
	done chan struct{} // closed once cmd.Wait returned
}

// runner adapts one resolved pod/container to the Executor and Attacher
// interfaces of the upstream streaming server. The names it is handed there
// are ignored: the request was resolved before the upgrade.
type runner struct {
	srv *Server
	pod *Pod
	ctr *Container
}

func (r *runner) ExecInContainer(ctx context.Context, _, _, _ string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	return r.srv.run(ctx, r.pod, r.ctr, cmd, in, out, errw, tty, resize)
}

func (r *runner) AttachContainer(ctx context.Context, _, _, _ string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return r.srv.run(ctx, r.pod, r.ctr, r.ctr.entrypoint(), in, out, errw, tty, resize)
}

// environ is deliberately minimal: the backend's own environment may hold
// things a "container" should not see.
func environ(pod *Pod, c *Container, tty bool) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	env := []string{"PATH=" + path, "HOSTNAME=" + pod.Name}
	if home := os.Getenv("HOME"); home != "" {
		env = append(env, "HOME="+home)
	}
	if tty {
		// containerd and CRI-O set TERM for tty execs; shells need it.
		env = append(env, "TERM=xterm")
	}
	return append(env, c.Env...)
}

// run starts argv as a "container" process, streams it and returns once it
// has exited and its output has been handed to out/errw. A non-zero exit is
// returned as a k8s.io/utils/exec.ExitError, which ServeExec turns into the
// NonZeroExitCode status.
func (s *Server) run(ctx context.Context, pod *Pod, c *Container, argv []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("no command given")
	}
	cmd := osexec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.Dir
	cmd.Env = environ(pod, c, tty)
	// A session of its own, so that the whole tree can be found and killed
	// (a job-control shell moves jobs into new process groups, never out of
	// the session). Pdeathsig: a backend that dies takes its processes along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}

	log := s.log.With("namespace", pod.Namespace, "pod", pod.Name, "container", c.Name)
	if tty {
		return s.runTTY(ctx, log, cmd, in, out, resize)
	}
	return s.runPipes(ctx, log, cmd, in, out, errw)
}

func (s *Server) start(log *slog.Logger, cmd *osexec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{srv: s, log: log, cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	s.track(p, true)
	log.Info("process started", "pid", p.pid, "argv0", cmd.Args[0], "tty", cmd.SysProcAttr.Setctty)
	return p, nil
}

// wait blocks until the process exits or ctx ends (the client went away),
// in which case the process tree is killed first. Either way every process
// left in its session is killed before returning: a session ends with its
// stream.
func (p *proc) wait(ctx context.Context) error {
	var (
		mu     sync.Mutex // orders the kills before the reaping
		reaped bool
		werr   error
	)
	go func() {
		// Wait for the exit without reaping: until the zombie is reaped its
		// pid, which is also the session and group id, cannot be reused, so
		// the kill cannot hit an unrelated process.
		waitExited(p.pid)
		mu.Lock()
		killSession(p.pid)
		werr = p.cmd.Wait()
		reaped = true
		mu.Unlock()
		close(p.done)
	}()
	select {
	case <-p.done:
	case <-ctx.Done():
		p.log.Info("client gone, killing process tree", "pid", p.pid)
		mu.Lock()
		if !reaped {
			killSession(p.pid)
		}
		mu.Unlock()
		<-p.done
	}
	p.srv.track(p, false)
	p.log.Info("process ended", "pid", p.pid, "state", p.cmd.ProcessState.String())
	return exitError(werr)
}

// waitExited blocks until pid has exited, leaving it a zombie.
func waitExited(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// exitError maps a Wait error to what ServeExec understands. A process
// killed by a signal is reported like a container runtime does: 128+signal.
func exitError(err error) error {
	var ee *osexec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return utilexec.CodeExitError{Err: err, Code: 128 + int(ws.Signal())}
	}
	return utilexec.CodeExitError{Err: err, Code: ee.ExitCode()}
}

func (s *Server) runPipes(ctx context.Context, log *slog.Logger, cmd *osexec.Cmd, in io.Reader, out, errw io.Writer) error {
	// Our own pipes rather than io.Reader/Writer fields: os/exec's copy
	// goroutines would make Wait block on a stdin the client never closes.
	var parentEnds, childEnds []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			childEnds = append(childEnds, w)
			parentEnds = append(parentEnds, r)
		}
		return
	}
	var stdinW *os.File
	if in != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		childEnds = append(childEnds, r)
		parentEnds = append(parentEnds, w)
		cmd.Stdin, stdinW = r, w
	}
	var readers []*os.File
	var writers []io.Writer
	for _, dst := range []struct {
		w   io.Writer
		set func(*os.File)
	}{{out, func(f *os.File) { cmd.Stdout = f }}, {errw, func(f *os.File) { cmd.Stderr = f }}} {
		if dst.w == nil {
			continue // os/exec connects a nil Stdout/Stderr to /dev/null
		}
		r, w, err := pipe()
		if err != nil {
			closeAll(childEnds)
			closeAll(parentEnds)
			return err
		}
		dst.set(w)
		readers = append(readers, r)
		writers = append(writers, dst.w)
	}
	p, err := s.start(log, cmd)
	closeAll(childEnds)
	if err != nil {
		closeAll(parentEnds)
		return err
	}
	defer closeAll(parentEnds)

	if stdinW != nil {
		// Outlives run only until the connection is closed, which unblocks in.
		go func() {
			io.Copy(stdinW, in)
			stdinW.Close() // EOF for the process: the client half-closed stdin
		}()
	}
	var copies sync.WaitGroup
	for i := range readers {
		copies.Go(func() { io.Copy(writers[i], readers[i]) })
	}
	werr := p.wait(ctx)
	s.drain(ctx, &copies, readers)
	return werr
}

func (s *Server) runTTY(ctx context.Context, log *slog.Logger, cmd *osexec.Cmd, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) error {
	// Start with the client's first size, so that the very first thing the
	// process sees is the right size (kubernetes#47990).
	size := defaultSize
	if resize != nil && s.cfg.InitialSizeWait > 0 {
		t := time.NewTimer(s.cfg.InitialSizeWait)
		select {
		case sz, ok := <-resize:
			if ok && sz.Width > 0 && sz.Height > 0 {
				size = unix.Winsize{Col: sz.Width, Row: sz.Height}
			}
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
	ptmx, tty, err := openPTY()
	if err != nil {
		return err
	}
	defer ptmx.Close()
	if err := setSize(ptmx, size); err != nil {
		tty.Close()
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0
	p, err := s.start(log, cmd)
	tty.Close()
	if err != nil {
		return err
	}

	stop := make(chan struct{})
	defer close(stop)
	if resize != nil {
		go func() {
			for {
				select {
				case sz, ok := <-resize:
					if !ok {
						return
					}
					if sz.Width > 0 && sz.Height > 0 {
						setSize(ptmx, unix.Winsize{Col: sz.Width, Row: sz.Height})
					}
				case <-stop:
					return
				}
			}
		}()
	}
	if in != nil {
		// A pty has no half-close: stdin EOF leaves the terminal open, as
		// with container runtimes.
		go io.Copy(ptmx, in)
	}
	var copies sync.WaitGroup
	if out != nil {
		copies.Go(func() { io.Copy(out, ptmx) }) // ends with EIO once no process holds the tty
	} else {
		copies.Go(func() { io.Copy(io.Discard, ptmx) })
	}
	werr := p.wait(ctx)
	s.drain(ctx, &copies, []*os.File{ptmx})
	return werr
}

// openPTY opens a pty pair. The master is returned in non-blocking mode,
// registered with Go's poller: pty.Open leaves it blocking (its ioctls go
// through File.Fd), and a blocking read cannot be interrupted by Close, which
// drain relies on.
func openPTY() (master, tty *os.File, err error) {
	m, tty, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err == nil {
		err = unix.SetNonblock(fd, true)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		tty.Close()
		return nil, nil, err
	}
	return os.NewFile(uintptr(fd), m.Name()), tty, nil
}

// setSize sets the terminal size through the poller's reference to the
// descriptor, which is safe against a concurrent Close (File.Fd is not).
func setSize(ptmx *os.File, ws unix.Winsize) error {
	rc, err := ptmx.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &ws)
	}); err != nil {
		return err
	}
	return ierr
}

// drain waits for the output copies to reach EOF, which they do once every
// process holding the other end is gone; a process that escaped the session
// kill (setsid) could hold it forever, hence the bound. A client that is gone
// needs no more output.
func (s *Server) drain(ctx context.Context, copies *sync.WaitGroup, files []*os.File) {
	done := make(chan struct{})
	go func() {
		copies.Wait()
		close(done)
	}()
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-ctx.Done():
	case <-t.C:
		s.log.Warn("output still open after the process ended; closing it")
	}
	for _, f := range files {
		f.Close() // unblocks the copy: these files are non-blocking
	}
	<-done
}

// killSession SIGKILLs the process group led by sid at once, and every
// other process of the session sid (job-control shells put jobs in groups of
// their own) through sessionKills' shared scan of /proc.
func killSession(sid int) {
	syscall.Kill(-sid, syscall.SIGKILL)
	sessionKills.kill(sid)
}

// killScan SIGKILLs every process whose session is in sids, but not the
// session leaders themselves (their group was killed already).
func killScan(sids map[int][]chan struct{}) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, leader := sids[pid]; leader {
			continue
		}
		if s, ok := procSession(pid); ok {
			if _, mine := sids[s]; mine {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// procSession reads the session id from /proc/<pid>/stat.
func procSession(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name may contain spaces and parentheses: fields start
	// after the last ')': state ppid pgrp session ...
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 {
		return 0, false
	}
	sid, err := strconv.Atoi(f[3])
	return sid, err == nil
}

// track records running processes so that Close can kill them.
func (s *Server) track(p *proc, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.procs[p] = struct{}{}
	} else {
		delete(s.procs, p)
	}
}

// PIDs returns the process ids of the sessions' main processes now running.
func (s *Server) PIDs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	pids := make([]int, 0, len(s.procs))
	for p := range s.procs {
		pids = append(pids, p.pid)
	}
	return pids
}

// killAll kills every running process tree (Close).
func (s *Server) killAll() {
	s.mu.Lock()
	procs := make([]*proc, 0, len(s.procs))
	for p := range s.procs {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	for _, p := range procs {
		killSession(p.pid)
	}
}
