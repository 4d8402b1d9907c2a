package main

import (
	"context"
	"errors"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// telemetry is the process's OpenTelemetry set-up: metrics for Prometheus
// on the health port, traces over OTLP only when the standard OTEL_*
// variables ask for them.
type telemetry struct {
	meters         *sdkmetric.MeterProvider
	tracers        trace.TracerProvider
	metricsHandler http.Handler
	shutdown       func(context.Context) error
}

// newTelemetry sets up the providers and lets each package register its
// own instruments (the keyring's, the TLS reloader's).
func newTelemetry(ctx context.Context, register ...func(metric.MeterProvider) error) (*telemetry, error) {
	res := resource.NewSchemaless(semconv.ServiceName("k8s-ws-proxy"), semconv.ServiceVersion(version))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, err
	}
	meters := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	for _, r := range register {
		if err := r(meters); err != nil {
			return nil, err
		}
	}

	t := &telemetry{meters: meters, metricsHandler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	shutdowns := []func(context.Context) error{meters.Shutdown}
	if otlpTracesRequested() {
		exp, err := otlptracehttp.New(ctx) // reads OTEL_EXPORTER_OTLP_* itself
		if err != nil {
			return nil, err
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		t.tracers = tp
		shutdowns = append(shutdowns, tp.Shutdown)
		otel.SetTextMapPropagator(propagation.TraceContext{})
	} else {
		t.tracers = noop.NewTracerProvider()
	}
	t.shutdown = func(ctx context.Context) error {
		var errs []error
		for _, f := range shutdowns {
			errs = append(errs, f(ctx))
		}
		return errors.Join(errs...)
	}
	return t, nil
}

// otlpTracesRequested follows the OpenTelemetry environment conventions:
// traces are exported when an OTLP endpoint is configured and the traces
// exporter is not turned off.
func otlpTracesRequested() bool {
	if e := os.Getenv("OTEL_TRACES_EXPORTER"); e == "none" {
		return false
	} else if e == "otlp" {
		return true
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}
