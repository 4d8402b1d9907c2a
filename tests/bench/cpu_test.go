package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports (the kernel's own HZ is
// hidden behind it).
const clockTick = 10 * time.Millisecond

// cpuTime is the CPU time (user + system, all threads, live or exited)
// process pid has used so far. On shared cores it moves far less with the
// machine's load than wall-clock time does: it counts only what the
// process itself ran.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state); utime is field 14
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * clockTick, nil
}

// syscalls is how many read and write system calls (syscr + syscw in
// /proc/<pid>/io, all threads) process pid has made so far: each one is a
// crossing into the kernel, and most of a relay's are one per TLS record.
func syscalls(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	var n int64
	for line := range strings.SplitSeq(string(data), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if ok && (k == "syscr" || k == "syscw") {
			c, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/io: %q", pid, line)
			}
			n += c
		}
	}
	return n, nil
}

// cpuMeter reads the CPU time of a fixed set of processes at once.
type cpuMeter struct {
	names []string
	pids  []int
}

func (m *cpuMeter) add(name string, pid int) {
	m.names = append(m.names, name)
	m.pids = append(m.pids, pid)
}

// reading is the CPU time and read/write system calls of each process.
type reading struct {
	cpu   []time.Duration
	calls []int64
}

func (m *cpuMeter) read() (reading, error) {
	r := reading{cpu: make([]time.Duration, len(m.pids)), calls: make([]int64, len(m.pids))}
	for i, pid := range m.pids {
		d, err := cpuTime(pid)
		if err != nil {
			return r, fmt.Errorf("%s: %w", m.names[i], err)
		}
		n, err := syscalls(pid)
		if err != nil {
			return r, fmt.Errorf("%s: %w", m.names[i], err)
		}
		r.cpu[i], r.calls[i] = d, n
	}
	return r, nil
}
