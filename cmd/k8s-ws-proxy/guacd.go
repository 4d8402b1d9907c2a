package main

import (
	"errors"
	"fmt"
	"strings"
)

// guacdMaxRequest is the size of the buffer guacd builds the request's path
// and query in (GUAC_KUBERNETES_MAX_ENDPOINT_LENGTH). guacd refuses to
// connect unless the path, the query and a terminating NUL fit, so the
// path+query must be at most guacdMaxRequest-1 bytes.
const guacdMaxRequest = 1024

// guacdDefaultTerminalType is guacd's default "terminal-type", which its
// main branch substitutes for $TERM in exec-command.
const guacdDefaultTerminalType = "linux"

// guacdEscape escapes a path segment or query value as guacd's
// guac_kubernetes_escape_url_component does: A-Z a-z 0-9 and -_.!~*'()
// unchanged, every other byte as %XX. (guacd formats bytes >= 0x80 through
// a signed char and so writes garbage for them, but always 3 bytes, so the
// length computed here is still exact.)
func guacdEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// guacdQuery appends name=escape(value) with guacd's delimiter rule: '?'
// for the first parameter, '&' after.
func guacdQuery(b *strings.Builder, name, value string) {
	if strings.IndexByte(b.String(), '?') < 0 {
		b.WriteByte('?')
	} else {
		b.WriteByte('&')
	}
	b.WriteString(name)
	b.WriteByte('=')
	b.WriteString(guacdEscape(value))
}

// guacdPath returns the request path and query guacd sends. pod is
// whatever the guacd "pod" parameter holds (for k8s-ws-proxy: the token);
// empty container or execCommand mean the parameter is unset. splitCommand
// selects the main branch's behaviour (one command= per whitespace-separated
// word, $TERM replaced by terminalType) over release 1.6.0's (the whole
// exec-command as one command= value).
func guacdPath(namespace, pod, container, execCommand string, splitCommand bool, terminalType string) string {
	if namespace == "" {
		namespace = "default" // guacd's default for the namespace parameter
	}
	call := "attach"
	if execCommand != "" {
		call = "exec"
	}
	var b strings.Builder
	b.WriteString("/api/v1/namespaces/")
	b.WriteString(guacdEscape(namespace))
	b.WriteString("/pods/")
	b.WriteString(guacdEscape(pod))
	b.WriteByte('/')
	b.WriteString(call)
	if execCommand != "" {
		if splitCommand {
			for _, arg := range guacdSplitCommand(execCommand, terminalType) {
				guacdQuery(&b, "command", arg)
			}
		} else {
			guacdQuery(&b, "command", execCommand)
		}
	}
	if container != "" {
		guacdQuery(&b, "container", container)
	}
	guacdQuery(&b, "stdin", "true")
	guacdQuery(&b, "stdout", "true")
	guacdQuery(&b, "tty", "true")
	return b.String()
}

// guacdSplitCommand splits exec-command as guacd's main branch does: on C
// isspace() bytes, no quoting, and "$TERM" (unless followed by a letter,
// digit or '_') replaced by the terminal type.
func guacdSplitCommand(cmd, terminalType string) []string {
	isSpace := func(c byte) bool { return strings.IndexByte(" \t\n\v\f\r", c) >= 0 }
	var args []string
	i := 0
	for i < len(cmd) {
		for i < len(cmd) && isSpace(cmd[i]) {
			i++
		}
		var arg strings.Builder
		for i < len(cmd) && !isSpace(cmd[i]) {
			if strings.HasPrefix(cmd[i:], "$TERM") {
				next := byte(0)
				if i+5 < len(cmd) {
					next = cmd[i+5]
				}
				if !('A' <= next && next <= 'Z' || 'a' <= next && next <= 'z' || '0' <= next && next <= '9' || next == '_') {
					arg.WriteString(terminalType)
					i += 5
					continue
				}
			}
			arg.WriteByte(cmd[i])
			i++
		}
		if arg.Len() > 0 {
			args = append(args, arg.String())
		}
	}
	return args
}

// guacdRequestLen is the longer of the two guacd versions' path+query for
// these parameters; guacd connects only if it is below guacdMaxRequest.
func guacdRequestLen(namespace, pod, container, execCommand, terminalType string) int {
	return max(
		len(guacdPath(namespace, pod, container, execCommand, false, terminalType)),
		len(guacdPath(namespace, pod, container, execCommand, true, terminalType)),
	)
}

// guacdStreams gives a --for-guacd token tty and stdin: guacd always sends
// stdin=true&stdout=true&tty=true, so a token without either is refused by
// the proxy and the user sees only "Aborted. See logs.". Both default to on;
// turning one off explicitly is an error.
func guacdStreams(tty, ttySet, stdin, stdinSet bool) (bool, bool, error) {
	if (ttySet && !tty) || (stdinSet && !stdin) {
		return false, false, errors.New("--for-guacd needs --tty and --stdin: guacd always sends tty=true and stdin=true, " +
			"and the proxy refuses a request that asks for more than its token grants")
	}
	return true, true, nil
}

// guacdCheckCommand refuses an argv that guacd 1.6.1 cannot send so that
// the proxy matches it: 1.6.1 splits exec-command at every space, tab or
// newline (runs of them included) and replaces $TERM with its
// terminal-type, while the proxy compares the words joined by single
// spaces. Single spaces inside an argument are fine.
func guacdCheckCommand(argv []string) error {
	for _, a := range argv {
		switch {
		case a == "":
			return errors.New("--for-guacd: an empty --command argument cannot be sent by guacd")
		case strings.Contains(a, "$TERM"):
			return fmt.Errorf("--for-guacd: --command %q contains $TERM, which guacd 1.6.1 replaces with its terminal-type "+
				"before sending: write the value itself (e.g. TERM=%s, see --guacd-terminal-type)", a, guacdDefaultTerminalType)
		case strings.ContainsAny(a, "\t\n\r\v\f"), strings.Contains(a, "  "), a != strings.TrimSpace(a):
			return fmt.Errorf("--for-guacd: --command %q has whitespace other than single spaces between words, "+
				"which guacd 1.6.1's word splitting cannot preserve", a)
		}
	}
	return nil
}
