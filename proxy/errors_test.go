package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestClientStatusHasNoAddress: what an exec failure tells the client on
// channel 3 names the failure, never an address of the proxy's peers.
func TestClientStatusHasNoAddress(t *testing.T) {
	t.Parallel()
	reset := &net.OpError{Op: "read", Net: "tcp",
		Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53754},
		Addr:   &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 38444},
		Err:    os.NewSyscallError("read", syscall.ECONNRESET)}
	cases := []struct {
		err  error
		want string
	}{
		{reset, "read tcp <address>-><address>: read: connection reset by peer"},
		{fmt.Errorf("error reading from error stream: %w", reset), "error reading from error stream"},
		{fmt.Errorf(`Get "https://10.0.0.1:6443/api": %w`, io.ErrUnexpectedEOF), "unexpected EOF"},
		{&net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.ParseIP("fd00::1"), Port: 6443}, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "connection refused"},
		{apierrors.NewInternalError(errors.New("error dialing backend: dial tcp 10.1.2.3:10250: i/o timeout")), "error dialing backend"},
		{apierrors.NewServiceUnavailable("proxy error from 127.0.0.1:6443 while dialing kubelet.internal:10250, code 503: 503 Service Unavailable"), "proxy error"},
		{apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "web-0"), `pods "web-0" not found`},
		{errors.New("something odd at [fd00::1]:10250 via http://kubelet:10250/exec"), "something odd at <address> via <address>"},
	}
	for _, tc := range cases {
		st := clientStatus(tc.err)
		text := fmt.Sprintf("%s %+v", st.Message, st.Details)
		for _, addr := range []string{"127.0.0.1", "10.0.0.1", "10.1.2.3", "fd00::1", "6443", "10250", "38444", "53754", "http://"} {
			if strings.Contains(text, addr) {
				t.Errorf("%v: the client would read %q", tc.err, text)
			}
		}
		if !strings.Contains(st.Message, tc.want) {
			t.Errorf("%v: message %q does not say %q", tc.err, st.Message, tc.want)
		}
		if st.Status != "Failure" || st.Code == 0 {
			t.Errorf("%v: status %+v", tc.err, st)
		}
	}
}
