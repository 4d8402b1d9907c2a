package tlsreload

import (
	"context"

	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics registers the reloader's instruments with mp, observed
// at each collection.
func (r *Reloader) RegisterMetrics(mp metric.MeterProvider) error {
	m := mp.Meter("github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tlsreload")
	reloads, err := m.Int64ObservableCounter("k8s_ws_proxy.tls.reloads",
		metric.WithDescription("Distinct TLS configurations loaded, the first included."))
	if err != nil {
		return err
	}
	failures, err := m.Int64ObservableCounter("k8s_ws_proxy.tls.reload_errors",
		metric.WithDescription("Reads of the TLS files that failed (the previous configuration stays in use)."))
	if err != nil {
		return err
	}
	notAfter, err := m.Int64ObservableGauge("k8s_ws_proxy.tls.certificate.not_after", metric.WithUnit("s"),
		metric.WithDescription("Expiry of the serving certificate in use, in Unix seconds."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(reloads, int64(r.r.Changes()))
		o.ObserveInt64(failures, int64(r.r.Errors()))
		o.ObserveInt64(notAfter, r.Leaf().NotAfter.Unix())
		return nil
	}, reloads, failures, notAfter)
	return err
}
