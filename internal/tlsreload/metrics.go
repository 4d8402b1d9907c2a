package tlsreload

import (
	"context"

	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics registers the reloader's instruments with mp, observed
// at each collection.
func (r *Reloader) RegisterMetrics(mp metric.MeterProvider) error {
	m := mp.Meter("github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tlsreload")
	if err := r.r.RegisterMetrics(m, "k8s_ws_proxy.tls", "the TLS configuration"); err != nil {
		return err
	}
	notAfter, err := m.Int64ObservableGauge("k8s_ws_proxy.tls.certificate.not_after", metric.WithUnit("s"),
		metric.WithDescription("Expiry of the serving certificate in use, in Unix seconds."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(notAfter, r.Leaf().NotAfter.Unix())
		return nil
	}, notAfter)
	return err
}
