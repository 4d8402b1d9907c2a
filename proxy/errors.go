package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"syscall"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// addressPattern finds what tells a client where the proxy's peers are:
// URLs, IPv4 and bracketed IPv6 addresses with or without a port, and
// host:port pairs.
var addressPattern = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"']+|\[[0-9A-Fa-f:.]+\](:\d+)?|\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b|\b[A-Za-z0-9][A-Za-z0-9.-]*:\d{2,5}\b`)

// scrubAddresses replaces every address in msg: a client learns what
// failed, never where (the log keeps the detail).
func scrubAddresses(msg string) string {
	return addressPattern.ReplaceAllString(msg, "<address>")
}

// clientStatus is the channel 3 status for an exec that failed with err:
// an API server status keeps its reason and code, with any address taken
// out of its text; anything else (a transport error toward the API server)
// is an internal error that says what kind of failure it was.
func clientStatus(err error) *metav1.Status {
	var statusErr *apierrors.StatusError
	if errors.As(err, &statusErr) {
		st := statusErr.Status()
		st.Message = scrubAddresses(st.Message)
		if st.Details != nil {
			d := *st.Details
			d.Causes = append([]metav1.StatusCause(nil), d.Causes...)
			for i := range d.Causes {
				d.Causes[i].Message = scrubAddresses(d.Causes[i].Message)
			}
			st.Details = &d
		}
		return &st
	}
	st := apierrors.NewInternalError(errors.New(execFailure(err))).Status()
	return &st
}

// execFailure names the kind of transport failure, in words for a user.
func execFailure(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "the exec stream timed out"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "the connection to the API server was reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "the API server refused the connection"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "the connection to the API server closed early"
	}
	return "the exec failed"
}
