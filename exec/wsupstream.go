package exec

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	gwebsocket "github.com/gorilla/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// The frame relay's upstream WebSocket is client-go's transport/websocket
// RoundTripper (same TLS, auth wrappers, proxy, subprotocol check and
// refusal errors) except for its buffers. client-go fixes a 33 KiB read
// and a 33 KiB write buffer on every connection; a per-node proxy holds
// one upstream per session, and those 66 KiB were most of an idle
// session's memory (BenchmarkIdleSessionMemory heap profile). Here the
// read buffer is small (large reads bypass it: bufio reads straight into
// the caller's slice) and write buffers come from a pool, held only while
// a frame is written.
const upstreamReadBuffer = 4 << 10

// upstreamWriteBuffer is client-go's: a 32 KiB stdin chunk and its
// channel byte go out as one frame.
const upstreamWriteBuffer = 32<<10 + 1024

var upstreamWritePool gwebsocket.BufferPool = &sync.Pool{}

// wsUpgrader is the innermost round tripper; Negotiate finds the
// connection in it (client-go's ConnectionHolder).
type wsUpgrader struct {
	tls   *tls.Config
	proxy func(*http.Request) (*url.URL, error)
	conn  *gwebsocket.Conn
}

func (u *wsUpgrader) DataBufferSize() int          { return upstreamWriteBuffer - 1024 }
func (u *wsUpgrader) Connection() *gwebsocket.Conn { return u.conn }
func (u *wsUpgrader) TLSClientConfig() *tls.Config { return u.tls } // utilnet.TLSClientConfigHolder
func upgraderFor(cfg *rest.Config) (http.RoundTripper, *wsUpgrader, error) {
	tc, err := cfg.TransportConfig()
	if err != nil {
		return nil, nil, err
	}
	tlsConfig, err := transport.TLSConfigFor(tc)
	if err != nil {
		return nil, nil, err
	}
	proxy := cfg.Proxy
	if proxy == nil {
		proxy = utilnet.NewProxierWithNoProxyCIDR(http.ProxyFromEnvironment)
	}
	u := &wsUpgrader{tls: tlsConfig, proxy: proxy}
	rt, err := transport.HTTPWrappersForConfig(tc, u)
	if err != nil {
		return nil, nil, err
	}
	return rt, u, nil
}

func (u *wsUpgrader) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		defer req.Body.Close() //nolint:errcheck
	}
	protocols := req.Header[wsstream.WebSocketProtocolHeader]
	header := req.Header.Clone()
	delete(header, wsstream.WebSocketProtocolHeader)
	d := gwebsocket.Dialer{
		Proxy:           u.proxy,
		TLSClientConfig: u.tls,
		Subprotocols:    protocols,
		ReadBufferSize:  upstreamReadBuffer,
		WriteBufferSize: upstreamWriteBuffer,
		WriteBufferPool: upstreamWritePool,
	}
	target := *req.URL
	switch target.Scheme {
	case "https":
		target.Scheme = "wss"
	case "http":
		target.Scheme = "ws"
	default:
		return nil, fmt.Errorf("unknown url scheme: %s", target.Scheme)
	}
	conn, resp, err := d.DialContext(req.Context(), target.String(), header)
	if err != nil {
		if errors.Is(err, gwebsocket.ErrBadHandshake) {
			return nil, &httpstream.UpgradeFailureError{Cause: refusal(err, resp)}
		}
		return nil, err
	}
	if !slices.Contains(protocols, conn.Subprotocol()) {
		conn.Close() //nolint:errcheck
		return nil, &httpstream.UpgradeFailureError{Cause: fmt.Errorf("invalid protocol, expected one of %q, got %q", protocols, conn.Subprotocol())}
	}
	u.conn = conn
	return resp, nil
}

var statusCodecs = func() serializer.CodecFactory {
	s := runtime.NewScheme()
	s.AddUnversionedTypes(metav1.SchemeGroupVersion, &metav1.Status{})
	return serializer.NewCodecFactory(s)
}()

// refusal is client-go's cause for a refused upgrade: the response's
// Status as a StatusError, or its status line and body.
func refusal(err error, resp *http.Response) error {
	if resp == nil || resp.Status == "" {
		return err
	}
	defer resp.Body.Close() //nolint:errcheck
	cause := fmt.Errorf("%w (%s)", err, resp.Status)
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	if readErr != nil {
		return fmt.Errorf("%w: unable to read error from server response", cause)
	}
	text := strings.TrimSpace(string(body))
	if text == "" {
		return cause
	}
	obj, _, decodeErr := statusCodecs.UniversalDecoder().Decode(body, nil, &metav1.Status{})
	if decodeErr != nil {
		return fmt.Errorf("%w: %s", cause, text)
	}
	if st, ok := obj.(*metav1.Status); ok {
		return &apierrors.StatusError{ErrStatus: *st}
	}
	return cause
}
