package main

import (
	"reflect"
	"strings"
	"testing"
)

// The expected strings follow guacamole-server's src/protocols/kubernetes/
// url.c (release 1.6.0 and the main branch); during development they were
// also compared with that C code, compiled, on 20,000 random inputs.
func TestGuacdPath(t *testing.T) {
	cases := []struct {
		ns, pod, container, cmd string
		v160, main              string
	}{
		{"default", "tok", "app", "ls -l",
			"/api/v1/namespaces/default/pods/tok/exec?command=ls%20-l&container=app&stdin=true&stdout=true&tty=true",
			"/api/v1/namespaces/default/pods/tok/exec?command=ls&command=-l&container=app&stdin=true&stdout=true&tty=true"},
		{"ns", "tok", "", "sh",
			"/api/v1/namespaces/ns/pods/tok/exec?command=sh&stdin=true&stdout=true&tty=true",
			"/api/v1/namespaces/ns/pods/tok/exec?command=sh&stdin=true&stdout=true&tty=true"},
		{"ns", "tok", "app", "",
			"/api/v1/namespaces/ns/pods/tok/attach?container=app&stdin=true&stdout=true&tty=true",
			"/api/v1/namespaces/ns/pods/tok/attach?container=app&stdin=true&stdout=true&tty=true"},
		{"", "tok", "", "",
			"/api/v1/namespaces/default/pods/tok/attach?stdin=true&stdout=true&tty=true",
			"/api/v1/namespaces/default/pods/tok/attach?stdin=true&stdout=true&tty=true"},
		{"ns", "tok", "c", "  env TERM=$TERM $TERMINAL $TERM_X\tx  ",
			"/api/v1/namespaces/ns/pods/tok/exec?command=%20%20env%20TERM%3D%24TERM%20%24TERMINAL%20%24TERM_X%09x%20%20&container=c&stdin=true&stdout=true&tty=true",
			"/api/v1/namespaces/ns/pods/tok/exec?command=env&command=TERM%3Dlinux&command=%24TERMINAL&command=%24TERM_X&command=x&container=c&stdin=true&stdout=true&tty=true"},
		{"ns", "tok", "c", "   ", // whitespace only: still exec, but no command= on main
			"/api/v1/namespaces/ns/pods/tok/exec?command=%20%20%20&container=c&stdin=true&stdout=true&tty=true",
			"/api/v1/namespaces/ns/pods/tok/exec?container=c&stdin=true&stdout=true&tty=true"},
	}
	for _, c := range cases {
		if got := guacdPath(c.ns, c.pod, c.container, c.cmd, false, "linux"); got != c.v160 {
			t.Errorf("1.6.0 %q:\n got %s\nwant %s", c.cmd, got, c.v160)
		}
		if got := guacdPath(c.ns, c.pod, c.container, c.cmd, true, "linux"); got != c.main {
			t.Errorf("main %q:\n got %s\nwant %s", c.cmd, got, c.main)
		}
		if got, want := guacdRequestLen(c.ns, c.pod, c.container, c.cmd, "linux"), max(len(c.v160), len(c.main)); got != want {
			t.Errorf("request len %d, want %d", got, want)
		}
	}
}

func TestGuacdEscape(t *testing.T) {
	for in, want := range map[string]string{
		"azAZ09-_.!~*'()":                 "azAZ09-_.!~*'()",
		"a/b c":                           "a%2Fb%20c",
		"%&=?#+":                          "%25%26%3D%3F%23%2B",
		"\x00\x7f":                        "%00%7F",
		"é":                               "%C3%A9",                          // guacd writes 3 garbage bytes per such byte; same length
		"eyJhbGciOiJIUzI1NiJ9.e30.AbC-_x": "eyJhbGciOiJIUzI1NiJ9.e30.AbC-_x", // a token passes unchanged
	} {
		if got := guacdEscape(in); got != want {
			t.Errorf("guacdEscape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGuacdSplitCommand(t *testing.T) {
	for in, want := range map[string][]string{
		"":                        nil,
		"  a\t\nb\v\fc\r ":        {"a", "b", "c"},
		"$TERM":                   {"xterm"},
		"x$TERM.y":                {"xxterm.y"},
		"$TERMINAL $TERM9 $TERM_": {"$TERMINAL", "$TERM9", "$TERM_"},
		"sh -c 'echo hi'":         {"sh", "-c", "'echo", "hi'"}, // no quoting
	} {
		if got := guacdSplitCommand(in, "xterm"); !reflect.DeepEqual(got, want) {
			t.Errorf("split %q = %q, want %q", in, got, want)
		}
	}
}

// guacd needs path+query plus a NUL in 1024 bytes: 1023 fits, 1024 does not.
func TestGuacdLimitBoundary(t *testing.T) {
	base := len(guacdPath("ns", "", "", "", false, "linux"))
	pod := strings.Repeat("p", guacdMaxRequest-1-base)
	if n := guacdRequestLen("ns", pod, "", "", "linux"); n != guacdMaxRequest-1 {
		t.Fatalf("constructed %d bytes", n)
	}
	if n := guacdRequestLen("ns", pod+"p", "", "", "linux"); n < guacdMaxRequest {
		t.Fatalf("one more byte: %d", n)
	}
}
