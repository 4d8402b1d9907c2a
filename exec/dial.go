package exec

import (
	"context"
	"net"
	"net/http"
	"net/http/httptrace"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

type dialObserverKey struct{}

// WithDialObserver returns a context under which Stream calls observe once
// the API server has accepted the upgrade, with how long the dial took
// (connection, TLS and the upgrade round trip). A refused WebSocket attempt
// before an SPDY fallback is not reported; the fallback's dial is, timed on
// its own.
func WithDialObserver(ctx context.Context, observe func(time.Duration)) context.Context {
	return context.WithValue(ctx, dialObserverKey{}, observe)
}

// observingTransport bounds and tracks the connections of exec upgrades
// (boundHandshake) and times their round trips for requests whose
// context carries a dial observer. client-go builds every exec round
// tripper (WebSocket and SPDY) through rest.Config.WrapTransport, so this
// is the one place that sees the dial of both; other requests (pod
// lookups, access reviews) pass through untouched.
type observingTransport struct{ next http.RoundTripper }

func (o observingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !isExecUpgrade(req) {
		return o.next.RoundTrip(req)
	}
	ctx := req.Context()
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { boundHandshake(ctx, info.Conn) },
	}))
	observe, _ := ctx.Value(dialObserverKey{}).(func(time.Duration))
	start := time.Now()
	resp, err := o.next.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		if set := connSetOf(ctx); set != nil {
			set.upgraded()
		}
		if observe != nil {
			observe(time.Since(start))
		}
	}
	return resp, err
}

// isExecUpgrade reports whether req is an exec's upgrade: client-go's
// WebSocket and SPDY negotiations name their protocols before the round
// trip.
func isExecUpgrade(req *http.Request) bool {
	return req.Header.Get(wsstream.WebSocketProtocolHeader) != "" || req.Header.Get(httpstream.HeaderProtocolVersion) != ""
}

// DefaultHandshakeTimeout bounds an exec's handshake from the connection
// to the end of the upgrade response, or of a refusal's body: gorilla
// reads a refused WebSocket upgrade's body to its end, and neither
// client-go transport sets a limit, so a backend or middlebox that answers
// slowly, or never closes a refusal, would hold the session's dial for as
// long as the session lives. Generous: on a saturated node (make load,
// 1,000 sessions on 2 cores) healthy handshakes took over 30 s.
const DefaultHandshakeTimeout = 60 * time.Second

// SetHandshakeTimeout replaces DefaultHandshakeTimeout for the sessions
// the Dialer opens from now on; t <= 0 keeps the default.
func (d *Dialer) SetHandshakeTimeout(t time.Duration) {
	if t > 0 {
		d.handshake = t
	}
}

// boundHandshake puts the Stream call's handshake bound on an exec
// connection and adds it to the call's set, so that ending the session
// closes it even mid-handshake. gorilla clears the deadline once it has
// upgraded; the set does it for SPDY on the upgrade's response
// (observingTransport), and a refusal keeps it while its body is read.
// Outside a Stream call there is no set to lift it, so no bound either.
func boundHandshake(ctx context.Context, c net.Conn) {
	set := connSetOf(ctx)
	if set == nil {
		return
	}
	_ = c.SetDeadline(time.Now().Add(set.timeout))
	set.add(c)
}

func observeDials(prev func(http.RoundTripper) http.RoundTripper) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		if prev != nil {
			rt = prev(rt)
		}
		return observingTransport{next: rt}
	}
}
