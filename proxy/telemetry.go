package proxy

import (
	"context"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

const instrumentationName = "github.com/k8s-ws-proxy/k8s-ws-proxy/proxy"

// telemetry holds the proxy's instruments. Attribute values are bounded
// sets (reasons, results, directions): never a token, a pod name or a user.
type telemetry struct {
	tracer       trace.Tracer
	active       metric.Int64UpDownCounter
	sessions     metric.Int64Counter
	authFailures metric.Int64Counter
	rejections   metric.Int64Counter
	suppressed   metric.Int64Counter
	bytes        metric.Int64Counter
	execDial     metric.Float64Histogram
	duration     metric.Float64Histogram
}

func newTelemetry(mp metric.MeterProvider, tp trace.TracerProvider) (*telemetry, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	m := mp.Meter(instrumentationName)
	t := &telemetry{tracer: tp.Tracer(instrumentationName)}
	var err error
	if t.active, err = m.Int64UpDownCounter("k8s_ws_proxy.sessions.active",
		metric.WithDescription("Sessions currently bridged.")); err != nil {
		return nil, err
	}
	if t.sessions, err = m.Int64Counter("k8s_ws_proxy.sessions",
		metric.WithDescription("Sessions ended, by result (exited, client_gone, exec_failed, idle_timeout, ...).")); err != nil {
		return nil, err
	}
	if t.authFailures, err = m.Int64Counter("k8s_ws_proxy.auth.failures",
		metric.WithDescription("Session tokens refused, by reason.")); err != nil {
		return nil, err
	}
	if t.rejections, err = m.Int64Counter("k8s_ws_proxy.rejections",
		metric.WithDescription("Upgrade requests refused before the upgrade, by reason and HTTP status.")); err != nil {
		return nil, err
	}
	if t.suppressed, err = m.Int64Counter("k8s_ws_proxy.log.suppressed",
		metric.WithDescription("Log lines not written because identical ones (same event and reason) came too fast, by reason.")); err != nil {
		return nil, err
	}
	if t.bytes, err = m.Int64Counter("k8s_ws_proxy.bytes", metric.WithUnit("By"),
		metric.WithDescription("Payload bytes bridged, by direction (in = client to container).")); err != nil {
		return nil, err
	}
	if t.execDial, err = m.Float64Histogram("k8s_ws_proxy.exec.dial.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to open the exec toward the API server: connection, TLS and the accepted upgrade."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)); err != nil {
		return nil, err
	}
	if t.duration, err = m.Float64Histogram("k8s_ws_proxy.session.duration", metric.WithUnit("s"),
		metric.WithDescription("Session duration from upgrade request to close."),
		metric.WithExplicitBucketBoundaries(1, 10, 60, 300, 900, 1800, 3600, 4*3600, 8*3600)); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *telemetry) rejected(ctx context.Context, reason string, status int, auth bool) {
	t.rejections.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason), attribute.Int("status", status)))
	if auth {
		t.authFailures.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
	}
}

func (t *telemetry) logSuppressed(ctx context.Context, reason string) {
	t.suppressed.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

func (t *telemetry) ended(ctx context.Context, result string, in, out int64, d time.Duration) {
	t.sessions.Add(ctx, 1, metric.WithAttributes(attribute.String("result", resultLabel(result))))
	t.bytes.Add(ctx, in, metric.WithAttributes(attribute.String("direction", "in")))
	t.bytes.Add(ctx, out, metric.WithAttributes(attribute.String("direction", "out")))
	t.duration.Record(ctx, d.Seconds())
}

// resultLabel keeps the result label a bounded set: a client chooses its
// close code (about 4,000 possible values), so client_closed_<code> keeps
// only the codes RFC 6455 and its registry define and folds the rest into
// client_closed_other. The log line keeps the exact code.
func resultLabel(result string) string {
	code, ok := strings.CutPrefix(result, "client_closed_")
	if !ok {
		return result
	}
	n, err := strconv.Atoi(code)
	if err != nil || n < 1000 || n > 1015 || code != strconv.Itoa(n) {
		return "client_closed_other"
	}
	return result
}
