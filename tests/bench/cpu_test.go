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

// cpuMeter reads the CPU time of a fixed set of processes at once.
type cpuMeter struct {
	names []string
	pids  []int
}

func (m *cpuMeter) add(name string, pid int) {
	m.names = append(m.names, name)
	m.pids = append(m.pids, pid)
}

func (m *cpuMeter) read() ([]time.Duration, error) {
	out := make([]time.Duration, len(m.pids))
	for i, pid := range m.pids {
		d, err := cpuTime(pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.names[i], err)
		}
		out[i] = d
	}
	return out, nil
}
