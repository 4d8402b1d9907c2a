package poll

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Alive reports whether pid is a live process (not a zombie).
func Alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z'
}

// Gone waits until none of pids is alive (processes another component
// started, so not the test's to wait for) and returns how long that took.
// After timeout it kills those left and fails tb.
func Gone(tb testing.TB, timeout time.Duration, pids ...int) time.Duration {
	tb.Helper()
	start := time.Now()
	var left []int
	err := Until(context.Background(), Interval, timeout, func(context.Context) error {
		left = left[:0]
		for _, p := range pids {
			if Alive(p) {
				left = append(left, p)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("%v alive", left)
		}
		return nil
	})
	if err != nil {
		for _, p := range left {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		tb.Fatalf("processes %v still alive %v after the session ended", left, timeout)
	}
	return time.Since(start)
}
