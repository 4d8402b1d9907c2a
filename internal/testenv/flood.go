package testenv

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// GetFlood sends n plain GETs to url, one after another, and fails tb
// unless every one is answered with status want; it returns how long the n
// took.
func GetFlood(tb testing.TB, url string, n, want int) time.Duration {
	tb.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	start := time.Now()
	for range n {
		resp, err := client.Get(url)
		if err != nil {
			tb.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			tb.Fatalf("status %d, want %d", resp.StatusCode, want)
		}
	}
	return time.Since(start)
}
