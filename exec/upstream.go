package exec

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	apiremotecommand "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	clientspdy "k8s.io/client-go/transport/spdy"
	streamspdy "k8s.io/streaming/pkg/httpstream/spdy"
)

// ErrNoStatus is returned when an upstream that speaks v4 or v5 ended a
// session without sending the command's status: the connection to the API
// server or the kubelet was lost, or the backend died. Such backends
// always send one, Success included; client-go's SPDY path reads the
// missing status as success (an empty error stream).
var ErrNoStatus = errors.New("the connection to the exec backend ended before the command's exit status arrived")

// connSet is the network connections one Stream call dialled. Closing
// them is the one ending that works whatever the transport is doing:
// spdystream's Close writes its GOAWAY through a lock that a stdin copy
// blocked on a full socket holds, and its shutdown waits without a limit
// for streams the backend keeps open while the process runs
// (kubernetes#67913), so a polite close may never happen.
type connSet struct {
	mu       sync.Mutex
	conns    []net.Conn
	closed   bool
	upgrades int // upgrades completed (upgraded)
	start    time.Time
	timeout  time.Duration // the handshake bound (boundHandshake)
}

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		reset(c)
		c.Close()
		return
	}
	s.conns = append(s.conns, c)
}

// abortAll makes every close of the connections, whoever closes them, a
// reset (SO_LINGER 0): a connection closed with stdin still queued toward a
// backend that is not reading can send its FIN only after that data, that
// is never, and the backend would not learn that the session is gone.
func (s *connSet) abortAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		reset(c)
	}
}

// upgraded lifts the handshake deadline (boundHandshake) off the
// connections once an upgrade has succeeded.
func (s *connSet) upgraded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.upgrades++
	for _, c := range s.conns {
		_ = c.SetDeadline(time.Time{})
	}
}

// closeAll closes the connections and any added later.
func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

func reset(c net.Conn) {
	for {
		switch x := c.(type) {
		case *net.TCPConn:
			_ = x.SetLinger(0)
			return
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = x.NetConn()
		default:
			return
		}
	}
}

// tracking returns a context for client-go carrying a new connection
// set. When ctx ends, the connections are made to reset when closed, then
// client-go's context is cancelled (its WebSocket path closes its
// connection itself; cancelling first leaves its stream readers a chance
// to see the cancellation rather than a closed connection they may leak
// on), then they are closed: spdystream's own close can block forever.
// done closes the set for good; call it once the session returned.
func (d *Dialer) tracking(ctx context.Context) (inner context.Context, done func()) {
	set := &connSet{start: time.Now(), timeout: d.handshake}
	inner, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		set.abortAll()
		cancel()
		set.closeAll()
	})
	return context.WithValue(inner, connSetKey{}, set), func() {
		stop()
		set.closeAll()
		cancel()
	}
}

// ErrUpgradeTimeout is the failure of an exec whose backend did not
// complete the upgrade within the Dialer's handshake bound.
var ErrUpgradeTimeout = errors.New("the exec backend did not complete the upgrade")

// explainHandshake names a failure of the Stream call of ctx that is the
// handshake bound's doing: nothing upgraded, and the bound has passed.
func explainHandshake(ctx context.Context, err error) error {
	set := connSetOf(ctx)
	if err == nil || set == nil {
		return err
	}
	set.mu.Lock()
	defer set.mu.Unlock()
	if set.upgrades > 0 || time.Since(set.start) < set.timeout {
		return err
	}
	return fmt.Errorf("%w within %v: %v", ErrUpgradeTimeout, set.timeout, err)
}

// connSetOf is the connection set of ctx's Stream call (tracking), or nil.
func connSetOf(ctx context.Context) *connSet {
	set, _ := ctx.Value(connSetKey{}).(*connSet)
	return set
}

type connSetKey struct{}

// spdyCall is one SPDY session: whether the backend sent a status.
type spdyCall struct {
	protocol atomic.Pointer[string] // negotiated X-Stream-Protocol-Version
	status   atomic.Bool            // the error stream carried bytes
}

// missingStatus reports whether the backend negotiated a protocol that
// always sends a status (v4, v5) and sent none.
func (c *spdyCall) missingStatus() bool {
	p := c.protocol.Load()
	if p == nil {
		return false
	}
	switch *p {
	case apiremotecommand.StreamProtocolV4Name, apiremotecommand.StreamProtocolV5Name:
		return !c.status.Load()
	}
	return false
}

// spdyExecutor builds client-go's SPDY executor the way
// spdy.RoundTripperFor does, except that the connection is dialled through
// a transport whose connections the call can close, and the upgraded
// connection is watched for a status. A configured HTTP proxy cannot be
// combined with a substitute dialer in client-go, so with one the
// connections are not tracked (ending relies on client-go's close).
func (d *Dialer) spdyExecutor(ctx context.Context, u *url.URL, call *spdyCall) (remotecommand.Executor, error) {
	tlsConfig, err := rest.TLSConfigFor(d.cfg)
	if err != nil {
		return nil, err
	}
	proxy := http.ProxyFromEnvironment
	if d.cfg.Proxy != nil {
		proxy = d.cfg.Proxy
	}
	// No SPDY pings (client-go's default sends one every 5 s): the kubelet's
	// streaming server closes its socket right after the exit status, and a
	// ping written after that draws a TCP reset, which discards everything
	// still unread on our side, the status included, whenever the client
	// reads slower than the process writes (TestObserverFallsBehind lost its
	// last 3.5 MB and the status in 2 of 4 runs). TCP keepalive (net.Dialer's
	// default, 15 s) keeps an idle exec's connection alive instead.
	rtc := streamspdy.RoundTripperConfig{TLS: tlsConfig, Proxier: proxy}
	if pu, err := proxy(&http.Request{URL: u}); err == nil && pu == nil {
		rtc = streamspdy.RoundTripperConfig{UpgradeTransport: &http.Transport{
			TLSClientConfig: tlsConfig, DialContext: d.trackedDial,
		}}
	}
	rt, err := streamspdy.NewRoundTripperWithConfig(rtc)
	if err != nil {
		return nil, err
	}
	// The session's identity, if any, becomes Impersonate-* headers here.
	wrapper, err := rest.HTTPWrappersForConfig(d.configFor(ctx), rt)
	if err != nil {
		return nil, err
	}
	up := &watchingUpgrader{Upgrader: clientspdy.NewUpgraderForStreaming(rt), call: call}
	return remotecommand.NewSPDYExecutorForTransports(wrapper, up, "POST", u)
}

// trackedDial dials as the rest config says, bounds the handshake and
// records the connection in the Stream call's set.
func (d *Dialer) trackedDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	if d.cfg.Dial != nil {
		c, err = d.cfg.Dial(ctx, network, addr)
	} else {
		var nd net.Dialer
		c, err = nd.DialContext(ctx, network, addr)
	}
	if err != nil {
		return nil, err
	}
	// The SPDY round tripper dials and reads the response itself: no
	// trace hook sees this connection.
	boundHandshake(ctx, c)
	return c, nil
}

// watchingUpgrader records the negotiated protocol and wraps the error
// stream so that the call knows whether a status arrived.
type watchingUpgrader struct {
	clientspdy.Upgrader
	call *spdyCall
}

func (w *watchingUpgrader) NewConnection(resp *http.Response) (httpstream.Connection, error) {
	c, err := w.Upgrader.NewConnection(resp)
	if err != nil {
		return nil, err
	}
	p := resp.Header.Get(httpstream.HeaderProtocolVersion)
	w.call.protocol.Store(&p)
	return &watchedConn{Connection: c, call: w.call}, nil
}

type watchedConn struct {
	httpstream.Connection
	call *spdyCall
}

func (c *watchedConn) CreateStream(h http.Header) (httpstream.Stream, error) {
	s, err := c.Connection.CreateStream(h)
	if err != nil || h.Get(corev1.StreamType) != corev1.StreamTypeError {
		return s, err
	}
	return &watchedStream{Stream: s, call: c.call}, nil
}

type watchedStream struct {
	httpstream.Stream
	call *spdyCall
}

func (s *watchedStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if n > 0 {
		s.call.status.Store(true)
	}
	return n, err
}

// trackedSPDY runs one SPDY session, dialling connections that Stream's
// tracking closes, and turns a v4/v5 session that ended without a status
// into ErrNoStatus. used, if set, records that
// it ran (the fallback executor does not say which executor did).
type trackedSPDY struct {
	d    *Dialer
	u    *url.URL
	used *Transport
}

func (t *trackedSPDY) Stream(o remotecommand.StreamOptions) error {
	return t.StreamWithContext(context.Background(), o)
}

func (t *trackedSPDY) StreamWithContext(ctx context.Context, o remotecommand.StreamOptions) error {
	if t.used != nil {
		*t.used = TransportSPDY
	}
	call := &spdyCall{}
	ex, err := t.d.spdyExecutor(ctx, t.u, call)
	if err != nil {
		return err
	}
	err = ex.StreamWithContext(ctx, o)
	if err == nil && call.missingStatus() {
		return ErrNoStatus
	}
	return err
}
