package main

import (
	"log"
	"log/slog"
	"net/http"
	"time"

	"k8s.io/klog/v2"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/proxy"
)

// routeKlog sends everything klog is given (client-go's errors, such as
// "Unhandled Error" and "Websocket Ping failed") to logger, so the process
// writes one JSON object per line and nothing else.
func routeKlog(logger *slog.Logger) {
	klog.SetSlogLogger(logger)
}

// errorLog is net/http's error log ("http: Accept error", "http: TLS
// handshake error") as warnings on logger, sampled: any client can cause
// a handshake error line, and a flood of them must not fill the disk.
func errorLog(logger *slog.Logger) *log.Logger {
	return slog.NewLogLogger(proxy.NewSampledHandler(logger.Handler(), proxy.DefaultLogBurst, proxy.DefaultLogInterval), slog.LevelWarn)
}

// newHTTPServer is every listener's http.Server: its error log on slog,
// a deadline for the request headers, an idle timeout for keep-alive
// connections between requests, and the connection limiter's hooks.
func newHTTPServer(h http.Handler, logger *slog.Logger, readHeaderTimeout, idleTimeout time.Duration, lim *proxy.ConnLimiter) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          errorLog(logger),
		ConnState:         lim.ConnState,
		ConnContext:       lim.ConnContext,
	}
}
