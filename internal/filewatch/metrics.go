package filewatch

import (
	"context"

	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics registers prefix.reloads (value changes, the first load
// included) and prefix.reload_errors (loads that failed) with m, observed
// at each collection. what names the value in their descriptions.
func (r *Reloader[T]) RegisterMetrics(m metric.Meter, prefix, what string) error {
	reloads, err := m.Int64ObservableCounter(prefix+".reloads",
		metric.WithDescription("Changes of "+what+", the first load included."))
	if err != nil {
		return err
	}
	failures, err := m.Int64ObservableCounter(prefix+".reload_errors",
		metric.WithDescription("Reads of "+what+" that failed; the last good value stays in use."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(reloads, int64(r.Changes()))
		o.ObserveInt64(failures, int64(r.Errors()))
		return nil
	}, reloads, failures)
	return err
}
