// Command prebuild builds and caches every tool the test suites run (make
// tools, which make test runs first): see tools.Prebuild. It prints one JSON
// line per tool and, at the end, the wall and CPU time the builds took.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	err := tools.Prebuild(ctx, log)
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	log.Info("tools ready", "ok", err == nil, "wall_seconds", int(time.Since(start).Seconds()), "cpu_seconds", int(cpu.Seconds()))
	if err != nil {
		os.Exit(1)
	}
}
