package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

// The flag combinations serve refuses before touching any file, and the
// environment spelling of the new flags.
func TestTLSFlagCombinations(t *testing.T) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	off, err := tlsFlags{}.reloader(log)
	if off != nil || err != nil {
		t.Fatalf("no TLS flags: %v, %v", off, err)
	}
	for _, c := range []struct {
		f    tlsFlags
		want string
	}{
		{tlsFlags{certFile: "c"}, "go together"},
		{tlsFlags{keyFile: "k"}, "go together"},
		{tlsFlags{clientCAFile: "ca"}, "go together"},
		{tlsFlags{allowedSubjects: "guacd"}, "go together"},
		{tlsFlags{certFile: "c", keyFile: "k", allowedSubjects: "guacd"}, "needs --client-ca-file"},
		{tlsFlags{certFile: "/nonexistent/c", keyFile: "/nonexistent/k"}, "no such file"},
	} {
		if _, err := c.f.reloader(log); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.f, err, c.want)
		}
	}

	var o serveOptions
	t.Setenv("K8S_WS_PROXY_CLIENT_ALLOWED_SUBJECTS", "guacd, guacd.guacamole.svc")
	t.Setenv("K8S_WS_PROXY_TLS_CERT_FILE", "/env/tls.crt")
	var stderr strings.Builder
	if _, stop := newServeFlags(&o).parse([]string{"--tls-cert-file=/flag/tls.crt", "--tls-key-file=/flag/tls.key", "--client-ca-file=/flag/ca.crt"}, io.Discard, &stderr); stop {
		t.Fatal(stderr.String())
	}
	want := tlsFlags{certFile: "/flag/tls.crt", keyFile: "/flag/tls.key", clientCAFile: "/flag/ca.crt", allowedSubjects: "guacd, guacd.guacamole.svc"}
	if o.tls != want {
		t.Errorf("parsed %+v, want %+v", o.tls, want)
	}
	if got := splitList(o.tls.allowedSubjects); strings.Join(got, "|") != "guacd|guacd.guacamole.svc" {
		t.Errorf("subjects %q", got)
	}
}
