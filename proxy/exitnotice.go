package proxy

import (
	"fmt"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/choice"
)

// ExitNotice says when the exit status is also written to the terminal.
type ExitNotice string

const (
	// ExitNoticeAuto writes it for tty sessions on v4 or older protocols:
	// what guacd speaks, and guacd ignores channel 3, so its user would
	// never learn the exit code otherwise.
	ExitNoticeAuto   ExitNotice = "auto"
	ExitNoticeAlways ExitNotice = "always"
	ExitNoticeNever  ExitNotice = "never"

	// ExitNoticeDefault is the one default: the --exit-notice flag's and
	// what ParseExitNotice makes of an empty value (an unset variable).
	// Config's zero value writes no notice, so an embedder opts in.
	ExitNoticeDefault = ExitNoticeAuto
)

// ParseExitNotice parses an --exit-notice value; "" is ExitNoticeDefault.
func ParseExitNotice(s string) (ExitNotice, error) {
	return choice.Parse("exit notice", s, ExitNoticeDefault, ExitNoticeAuto, ExitNoticeAlways, ExitNoticeNever)
}

// exitNotice writes "[k8s-ws-proxy] process exited with code N" to the
// terminal before the status, when the policy asks for it. v5 clients
// read the status and keep their byte-exact stdout under auto.
func (ss *session) exitNotice(code int) {
	switch ss.cfg.ExitNotice {
	case ExitNoticeAlways:
	case ExitNoticeAuto:
		if !ss.claims.TTY || ss.proto.name == ProtocolV5 {
			return
		}
	default: // never, and the zero value
		return
	}
	ss.sendNotice(fmt.Sprintf("\r\n[k8s-ws-proxy] process exited with code %d\r\n", code))
}
