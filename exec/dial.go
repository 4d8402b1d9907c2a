package exec

import (
	"context"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
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

// observingTransport tracks upgraded connections (see trackUpgraded) and
// times upgrade round trips for requests whose context
// carries a dial observer. client-go builds every exec round tripper
// (WebSocket and SPDY) through rest.Config.WrapTransport, so this is the
// one place that sees the dial of both.
type observingTransport struct{ next http.RoundTripper }

func (o observingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	observe, _ := req.Context().Value(dialObserverKey{}).(func(time.Duration))
	if observe == nil {
		resp, err := o.next.RoundTrip(req)
		trackUpgraded(req, resp, err, o.next)
		return resp, err
	}
	start := time.Now()
	resp, err := o.next.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		observe(time.Since(start))
	}
	trackUpgraded(req, resp, err, o.next)
	return resp, err
}

// trackUpgraded adds the connection of an upgraded WebSocket to the
// Stream call's set: client-go's WebSocket round tripper holds it, and
// dials it with no hook of ours.
func trackUpgraded(req *http.Request, resp *http.Response, err error, rt http.RoundTripper) {
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		return
	}
	if h, ok := rt.(interface{ Connection() *websocket.Conn }); ok {
		if c := h.Connection(); c != nil {
			track(req.Context(), c.NetConn())
		}
	}
}

func observeDials(prev func(http.RoundTripper) http.RoundTripper) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		if prev != nil {
			rt = prev(rt)
		}
		return observingTransport{next: rt}
	}
}
