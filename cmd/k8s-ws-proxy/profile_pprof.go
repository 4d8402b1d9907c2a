//go:build pprof

// Profiling hooks for the benchmarks, compiled in only with -tags pprof
// (never in `make build` or the image). With K8S_WS_PROXY_CPUPROFILE set
// to a path prefix, SIGUSR1 starts a CPU profile to <prefix>-N.cpu.pprof
// and SIGUSR2 stops it and writes a heap profile beside it, so that a
// benchmark profiles exactly the stretch it measures.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
)

func init() {
	prefix := os.Getenv("K8S_WS_PROXY_CPUPROFILE")
	if prefix == "" {
		return
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		var f *os.File
		n := 0
		for s := range sigs {
			switch {
			case s == syscall.SIGUSR1 && f == nil:
				n++
				var err error
				if f, err = os.Create(fmt.Sprintf("%s-%d.cpu.pprof", prefix, n)); err != nil {
					fmt.Fprintln(os.Stderr, "cpu profile:", err)
					continue
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					fmt.Fprintln(os.Stderr, "cpu profile:", err)
					f.Close()
					f = nil
				}
			case s == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				f.Close()
				f = nil
				runtime.GC()
				if h, err := os.Create(fmt.Sprintf("%s-%d.heap.pprof", prefix, n)); err == nil {
					_ = pprof.Lookup("heap").WriteTo(h, 0)
					h.Close()
				}
			}
		}
	}()
}
