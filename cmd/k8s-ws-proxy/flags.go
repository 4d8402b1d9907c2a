package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Every subcommand parses its flags here, with the standard library's flag
// package: pflag or cobra would add to the serve binary, and would read the
// `-listen` spelling flag accepts (and scripts may use) as shorthands.

// envPrefix names the environment variable behind every serve flag:
// --node-name is K8S_WS_PROXY_NODE_NAME. A flag on the command line wins.
const envPrefix = "K8S_WS_PROXY_"

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// command is one subcommand's flags and help.
type command struct {
	*flag.FlagSet
	name     string // "token mint"
	synopsis string // what follows "usage: k8s-ws-proxy NAME "
	about    string // a paragraph under the synopsis, may be empty
	// env applies K8S_WS_PROXY_* variables to every flag (serve).
	env bool
	// envVars names the variables a subcommand reads itself, after its
	// flags (shell's K8S_WS_PROXY_TOKEN), for the help.
	envVars map[string]string
}

// seen, when a test sets it, gets each command as it parses.
var seen func(*command)

// envOf is the environment variable behind a flag, if any.
func (c *command) envOf(flagName string) string {
	if c.env {
		return envName(flagName)
	}
	return c.envVars[flagName]
}

func newCommand(name, synopsis, about string) *command {
	return &command{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), name: name, synopsis: synopsis, about: about}
}

// usage writes the help text: synopsis, about, then one entry a flag.
func (c *command) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: k8s-ws-proxy %s %s\n", c.name, c.synopsis)
	if c.about != "" {
		fmt.Fprintf(w, "\n%s\n", c.about)
	}
	n := 0
	c.VisitAll(func(f *flag.Flag) {
		if n++; n == 1 {
			fmt.Fprint(w, "\nflags:\n")
		}
		kind, text := flag.UnquoteUsage(f)
		if kind != "" {
			kind = " " + kind
		}
		fmt.Fprintf(w, "  --%s%s\n    \t%s", f.Name, kind, strings.ReplaceAll(text, "\n", "\n    \t"))
		if e := c.envOf(f.Name); e != "" {
			fmt.Fprintf(w, " (env %s)", e)
		}
		// Last on the line, as flag.PrintDefaults writes it.
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// parse reads the environment (when c.env), then args. --help prints the
// help to stdout and stops with 0; a bad flag or variable prints the error
// and the help to stderr and stops with 2.
func (c *command) parse(args []string, stdout, stderr io.Writer) (code int, stop bool) {
	if seen != nil {
		seen(c)
	}
	var msg bytes.Buffer
	c.SetOutput(&msg)
	c.Usage = func() {} // printed below, to the right stream
	err := c.applyEnv()
	if err == nil {
		err = c.Parse(args)
	}
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, flag.ErrHelp):
		c.usage(stdout)
		return 0, true
	}
	if msg.Len() == 0 {
		fmt.Fprintf(&msg, "%v\n", err)
	}
	fmt.Fprintf(stderr, "k8s-ws-proxy %s: %s\n", c.name, strings.TrimSpace(msg.String()))
	c.usage(stderr)
	return 2, true
}

func (c *command) applyEnv() error {
	if !c.env {
		return nil
	}
	var err error
	c.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && err == nil {
			if e := c.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: invalid value for --%s: %v", envName(f.Name), v, f.Name, e)
			}
		}
	})
	return err
}
