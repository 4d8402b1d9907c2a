package hmac

import (
	"context"

	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics registers the keyring's instruments with mp, observed at
// each collection: no work on the reload path.
func (k *Keyring) RegisterMetrics(mp metric.MeterProvider) error {
	m := mp.Meter("github.com/k8s-ws-proxy/k8s-ws-proxy/hmac")
	if err := k.r.RegisterMetrics(m, "k8s_ws_proxy.keyring", "the HMAC key set"); err != nil {
		return err
	}
	keys, err := m.Int64ObservableGauge("k8s_ws_proxy.keyring.keys",
		metric.WithDescription("Valid HMAC keys held, including keys in their rotation grace."))
	if err != nil {
		return err
	}
	refused, err := m.Int64ObservableGauge("k8s_ws_proxy.keyring.refused_files",
		metric.WithDescription("Visible files in the key directory that are not a valid key."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(keys, int64(k.KeyCount()))
		o.ObserveInt64(refused, k.refusedCount.Load())
		return nil
	}, keys, refused)
	return err
}
