// Command k8s-ws-proxy is the per-node WebSocket gateway into Kubernetes exec.
//
// Subcommands:
//
//	serve             run the proxy (the default when no subcommand is given)
//	token             mint, verify or inspect session tokens
//	bootstrap-secret  create the HMAC Secret if it does not exist (Helm hook)
//	shell             attach the local terminal to a session through a proxy
//	sessions          list or revoke live sessions through a proxy's admin API
//	version           print the build version
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// Set by the linker: -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return runServe(args, stdout, stderr)
	case "token":
		return tokenMain(args, stdin, stdout, stderr)
	case "bootstrap-secret":
		return bootstrapSecret(args, stdout, stderr, os.Getenv)
	case "shell":
		return runShell(args, stdout, stderr)
	case "sessions":
		return sessionsMain(args, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "k8s-ws-proxy %s (commit %s)\n", version, commit)
		return 0
	case "help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "k8s-ws-proxy: unknown subcommand %q\n\n", cmd)
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: k8s-ws-proxy <subcommand> [flags]

subcommands:
  serve             run the proxy (default)
  token             mint|verify|inspect session tokens
  bootstrap-secret  create the HMAC key Secret if absent (Helm hook)
  shell             attach the local terminal to a session through a proxy
  sessions          list|revoke live sessions through a proxy's admin API
  version           print the build version

Run "k8s-ws-proxy <subcommand> --help" for the flags of each.
`)
}
