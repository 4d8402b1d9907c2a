package main

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

// subcommands are the argument lists that reach a flag set.
var subcommands = [][]string{
	{"serve"}, {"token", "mint"}, {"token", "verify"}, {"token", "inspect"}, {"shell"},
	{"bootstrap-secret"}, {"sessions", "list"}, {"sessions", "revoke"},
}

// commandFor runs args with --help and returns the flag set it parsed, its
// exit status, stdout and stderr.
func commandFor(t *testing.T, args []string, help string) (*command, int, string, string) {
	t.Helper()
	var got *command
	seen = func(c *command) { got = c }
	t.Cleanup(func() { seen = nil })
	var stdout, stderr strings.Builder
	code := run(append(append([]string{}, args...), help), strings.NewReader(""), &stdout, &stderr)
	if got == nil {
		t.Fatalf("%v %s parsed no flag set", args, help)
	}
	return got, code, stdout.String(), stderr.String()
}

func TestHelpEverySubcommand(t *testing.T) {
	for _, args := range subcommands {
		for _, h := range []string{"--help", "-h", "-help"} {
			c, code, stdout, stderr := commandFor(t, args, h)
			name := strings.Join(args, " ")
			if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "usage: k8s-ws-proxy "+name+" ") {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q", name, h, code, stdout, stderr)
				continue
			}
			c.VisitAll(func(f *flag.Flag) {
				if !strings.Contains(stdout, "\n  --"+f.Name+" ") && !strings.Contains(stdout, "\n  --"+f.Name+"\n") {
					t.Errorf("%s %s does not list --%s", name, h, f.Name)
				}
				if e := c.envOf(f.Name); e != "" && !strings.Contains(stdout, "env "+e) {
					t.Errorf("%s %s does not name %s for --%s", name, h, e, f.Name)
				}
			})
		}
	}
	var stdout, stderr strings.Builder
	if code := run([]string{"help"}, nil, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "bootstrap-secret") {
		t.Errorf("help: exit %d, stdout %q", code, stdout.String())
	}
}

func TestBadFlagEverySubcommand(t *testing.T) {
	for _, args := range subcommands {
		_, code, stdout, stderr := commandFor(t, args, "--no-such-flag")
		name := strings.Join(args, " ")
		if code != 2 || stdout != "" || !strings.Contains(stderr, "k8s-ws-proxy "+name+": flag provided but not defined: -no-such-flag") ||
			!strings.Contains(stderr, "usage: k8s-ws-proxy "+name) {
			t.Errorf("%s --no-such-flag: exit %d, stdout %q, stderr %q", name, code, stdout, stderr)
		}
	}
}

// Every serve flag has a variable; the command line wins; a bad value
// stops the start naming the variable.
func TestServeEnvironment(t *testing.T) {
	t.Setenv("K8S_WS_PROXY_MAX_SESSIONS", "7")
	t.Setenv("K8S_WS_PROXY_IMPERSONATE", "true")
	t.Setenv("K8S_WS_PROXY_IDLE_TIMEOUT", "1m")
	t.Setenv("K8S_WS_PROXY_LISTEN", ":1")
	var o serveOptions
	var stderr strings.Builder
	if _, stop := newServeFlags(&o).parse([]string{"--listen=:2"}, &stderr, &stderr); stop {
		t.Fatal(stderr.String())
	}
	if o.maxSessions != 7 || !o.rec.impersonate || o.idleTimeout != time.Minute || o.listen != ":2" {
		t.Errorf("max-sessions %d, impersonate %v, idle-timeout %v, listen %q", o.maxSessions, o.rec.impersonate, o.idleTimeout, o.listen)
	}

	t.Setenv("K8S_WS_PROXY_MAX_SESSIONS", "many")
	var stdout strings.Builder
	stderr.Reset()
	code := run([]string{"serve"}, nil, &stdout, &stderr)
	if want := `k8s-ws-proxy serve: K8S_WS_PROXY_MAX_SESSIONS="many": invalid value for --max-sessions`; code != 2 || !strings.Contains(stderr.String(), want) {
		t.Errorf("bad variable: exit %d, stderr %q, want %q", code, stderr.String(), want)
	}
	// Before any flag parsing, so a bad variable fails even with --help.
	if c, code, _, stderr := commandFor(t, []string{"serve"}, "--help"); code != 2 || !c.env || !strings.Contains(stderr, "K8S_WS_PROXY_MAX_SESSIONS") {
		t.Errorf("bad variable with --help: exit %d, stderr %q", code, stderr)
	}
}

// docSection is the part of docs/configuration.md under the heading that
// names "k8s-ws-proxy NAME", up to the next heading.
func docSection(doc, name string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "#") {
			in = strings.Contains(line, "`k8s-ws-proxy "+name+"`")
			continue
		}
		if in {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// The flag combinations serve refuses before touching any file, and the
// environment spelling of the new flags.
func TestTLSFlagCombinations(t *testing.T) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	off, err := tlsFlags{}.reloader(log)
	if off != nil || err != nil {
		t.Fatalf("no TLS flags: %v, %v", off, err)
	}
	for _, c := range []struct {
		f    tlsFlags
		want string
	}{
		{tlsFlags{certFile: "c"}, "go together"},
		{tlsFlags{keyFile: "k"}, "go together"},
		{tlsFlags{clientCAFile: "ca"}, "go together"},
		{tlsFlags{allowedSubjects: "guacd"}, "go together"},
		{tlsFlags{certFile: "c", keyFile: "k", allowedSubjects: "guacd"}, "needs --client-ca-file"},
		{tlsFlags{certFile: "/nonexistent/c", keyFile: "/nonexistent/k"}, "no such file"},
	} {
		if _, err := c.f.reloader(log); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.f, err, c.want)
		}
	}

	var o serveOptions
	t.Setenv("K8S_WS_PROXY_CLIENT_ALLOWED_SUBJECTS", "guacd, guacd.guacamole.svc")
	t.Setenv("K8S_WS_PROXY_TLS_CERT_FILE", "/env/tls.crt")
	var stderr strings.Builder
	if _, stop := newServeFlags(&o).parse([]string{"--tls-cert-file=/flag/tls.crt", "--tls-key-file=/flag/tls.key", "--client-ca-file=/flag/ca.crt"}, io.Discard, &stderr); stop {
		t.Fatal(stderr.String())
	}
	want := tlsFlags{certFile: "/flag/tls.crt", keyFile: "/flag/tls.key", clientCAFile: "/flag/ca.crt", allowedSubjects: "guacd, guacd.guacamole.svc"}
	if o.tls != want {
		t.Errorf("parsed %+v, want %+v", o.tls, want)
	}
	if got := splitList(o.tls.allowedSubjects); strings.Join(got, "|") != "guacd|guacd.guacamole.svc" {
		t.Errorf("subjects %q", got)
	}
}

// TestFlagsDocumented keeps docs/configuration.md in step with the binary:
// every flag of every subcommand has a row there with its variable (or —)
// and its default.
func TestFlagsDocumented(t *testing.T) {
	raw, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	n := 0
	for _, args := range subcommands {
		name := strings.Join(args, " ")
		section := docSection(doc, name)
		c, _, _, _ := commandFor(t, args, "--help")
		c.VisitAll(func(f *flag.Flag) {
			n++
			env := "—"
			if e := c.envOf(f.Name); e != "" {
				env = "`" + e + "`"
			}
			prefix := "| `--" + f.Name + "` | " + env + " | "
			var row string
			for _, line := range strings.Split(section, "\n") {
				if strings.HasPrefix(line, prefix) {
					row = line
				}
			}
			if row == "" {
				t.Errorf("%s --%s: no row starting %q under the `k8s-ws-proxy %s` heading", name, f.Name, prefix, name)
				return
			}
			def, _, _ := strings.Cut(strings.TrimPrefix(row, prefix), " |")
			if !sameDefault(f, def) {
				t.Errorf("%s --%s: the doc's default is %s, the binary's %q", name, f.Name, def, f.DefValue)
			}
		})
	}
	if n < 60 {
		t.Fatalf("only %d flags found; the flag sets were not built", n)
	}
}

// sameDefault compares a doc cell (`5m`, `8080`, empty) with the flag's
// default value, durations by value.
func sameDefault(f *flag.Flag, cell string) bool {
	if f.DefValue == "" {
		return cell == "empty"
	}
	v, ok := strings.CutPrefix(cell, "`")
	if v, ok = strings.CutSuffix(v, "`"); !ok {
		return false
	}
	if g, isGetter := f.Value.(flag.Getter); isGetter {
		if d, isDuration := g.Get().(time.Duration); isDuration {
			p, err := time.ParseDuration(v)
			return err == nil && p == d
		}
	}
	return v == f.DefValue
}
