package proxy

import (
	"errors"
	"net/http"
	"regexp"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
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
// an API server status keeps its reason and code, anything else (a
// transport error toward the API server, an error the runtime reported)
// is an internal error; either way the text keeps what failed and loses
// every address (the close log line keeps err whole).
func clientStatus(err error) *metav1.Status {
	var statusErr *apierrors.StatusError
	if !errors.As(err, &statusErr) {
		statusErr = apierrors.NewInternalError(err)
	}
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

// statusReason is the reason of a refusal with this HTTP code: the one
// client-go gives a bare response of that code (409 Conflict, any other
// 5xx without its own reason InternalError; metav1 has no NotImplemented or
// BadGateway), so that no refusal goes out without a reason. Where client-go
// has none (the resume refusals): 410 Gone, any other 4xx BadRequest.
func statusReason(code int) metav1.StatusReason {
	if r := apierrors.NewGenericServerResponse(code, "", schema.GroupResource{}, "", "", 0, false).ErrStatus.Reason; r != metav1.StatusReasonUnknown {
		return r
	}
	if code == http.StatusGone {
		return metav1.StatusReasonGone
	}
	return metav1.StatusReasonBadRequest
}
