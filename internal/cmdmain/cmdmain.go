// Package cmdmain holds the process wiring the repository's small servers
// share, so that each main says only what is its own.
package cmdmain

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// Context ends on SIGINT or SIGTERM, the signals a terminal and a
// container runtime stop these processes with.
func Context() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Main runs run with the process's arguments and stderr under Context and
// exits with the code it returns; run stays testable without a process.
func Main(run func(ctx context.Context, args []string, logOut io.Writer) int) {
	ctx, stop := Context()
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// Parse parses args into fs. When done, the caller returns code: 0 after
// -h (fs has printed the usage), 2 for a usage error.
func Parse(fs *flag.FlagSet, args []string) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	return 0, false
}

// Logger is the one JSON stream a process logs to.
func Logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, nil))
}

// Listen listens on the TCP address addr; a failure is logged as "listen",
// and the caller exits 1.
func Listen(log *slog.Logger, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("listen", "error", err.Error())
	}
	return ln, err
}
