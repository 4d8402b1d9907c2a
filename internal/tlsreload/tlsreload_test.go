package tlsreload

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testlog"
)

// tlsFiles is a kubelet-style Secret volume with a serving pair (and
// optionally a CA file in a second volume, as the chart mounts it).
type tlsFiles struct {
	dir, caDir string
	keys       [][]byte // every private key PEM ever written, for log checks
}

func (f *tlsFiles) opts() Options {
	return Options{CertFile: filepath.Join(f.dir, "tls.crt"), KeyFile: filepath.Join(f.dir, "tls.key")}
}

func (f *tlsFiles) writePair(t *testing.T, certPEM, keyPEM []byte) time.Time {
	t.Helper()
	f.keys = append(f.keys, keyPEM)
	return filewatchtest.SwapSecretDir(t, f.dir, map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM})
}

func (f *tlsFiles) writeCA(t *testing.T, caPEM []byte) {
	t.Helper()
	filewatchtest.SwapSecretDir(t, f.caDir, map[string][]byte{"ca.crt": caPEM})
}

// servingFiles is a CA and TLS files holding a serving pair it signed, of
// the returned serial.
func servingFiles(t *testing.T) (*testenv.CA, *tlsFiles, *big.Int) {
	t.Helper()
	ca := testenv.NewCA(t, "serving-ca")
	f := newTLSFiles(t)
	c, k, serial := ca.Serving(t)
	f.writePair(t, c, k)
	return ca, f, serial
}

func newTLSFiles(t *testing.T) *tlsFiles {
	root := t.TempDir()
	return &tlsFiles{dir: filepath.Join(root, "tls"), caDir: filepath.Join(root, "client-ca")}
}

func newTestTLSReloader(t *testing.T, f *tlsFiles, opts Options) (*Reloader, *testlog.Buffer) {
	t.Helper()
	logs := &testlog.Buffer{}
	opts.Logger = logs.Logger()
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, k := range f.keys {
			block, _ := pem.Decode(k)
			if block == nil {
				continue // an empty or garbage "key" some test wrote
			}
			body := base64.StdEncoding.EncodeToString(block.Bytes)[:40]
			if strings.Contains(logs.String(), body) || strings.Contains(logs.String(), "PRIVATE KEY") {
				t.Errorf("log contains key material:\n%s", logs)
			}
		}
	})
	return r, logs
}

// runTLSReloader runs r until the test ends, once its watches are in place.
func runTLSReloader(t *testing.T, r *Reloader) {
	t.Helper()
	filewatchtest.Start(t, r.Run, r.r.Started())
}

// tlsEchoServer accepts TLS connections, reports each server-side
// handshake result, and echoes on the connections that pass.
type tlsEchoServer struct {
	addr    string
	results chan error
}

func startTLSEcho(t *testing.T, cfg *tls.Config) *tlsEchoServer {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(inner, cfg)
	s := &tlsEchoServer{addr: inner.Addr().String(), results: make(chan error, 100)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := c.(*tls.Conn).HandshakeContext(ctx)
				cancel()
				s.results <- err
				if err == nil {
					_, _ = io.Copy(c, c)
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// result is the server side of the next handshake.
func (s *tlsEchoServer) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.results:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no server-side handshake result")
		return nil
	}
}

// tlsClient is a connection that completed a round trip through the echo.
type tlsClient struct {
	conn *tls.Conn
	r    *bufio.Reader
}

// dial connects and proves the connection with a round trip. With TLS 1.3
// a server that refuses the client's certificate does so after the
// client's side of the handshake is done, so only the round trip shows it.
func (s *tlsEchoServer) dial(t *testing.T, cfg *tls.Config) (*tlsClient, error) {
	t.Helper()
	d := &tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	tc := &tlsClient{conn: c.(*tls.Conn), r: bufio.NewReader(c)}
	if err := tc.echo("hello"); err != nil {
		c.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return tc, nil
}

func (c *tlsClient) echo(line string) error {
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(c.conn, line+"\n"); err != nil {
		return err
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return errors.New("echo mismatch: " + got)
	}
	return nil
}

func (c *tlsClient) serial() *big.Int {
	return c.conn.ConnectionState().PeerCertificates[0].SerialNumber
}

func TestTLSServesAndFollowsCertificateRotation(t *testing.T) {
	ca, f, s1 := servingFiles(t)
	opts := f.opts()
	opts.PollInterval = time.Hour // only inotify can make the reload below
	r, logs := newTestTLSReloader(t, f, opts)
	runTLSReloader(t, r)
	srv := startTLSEcho(t, r.Config())
	client := &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}}

	old, err := srv.dial(t, client)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.result(t); err != nil {
		t.Fatal(err)
	}
	cs := old.conn.ConnectionState()
	if old.serial().Cmp(s1) != 0 || cs.NegotiatedProtocol != "http/1.1" || cs.Version != tls.VersionTLS13 {
		t.Fatalf("serial %v (want %v), ALPN %q, version %x", old.serial(), s1, cs.NegotiatedProtocol, cs.Version)
	}

	for i := range 3 {
		changed := r.Changed()
		c2, k2, s2 := ca.Serving(t)
		switched := f.writePair(t, c2, k2)
		filewatchtest.WaitChange(t, changed, "TLS configuration")
		t.Logf("rotation %d: new certificate in use %v after the ..data rename", i, time.Since(switched))
		fresh, err := srv.dial(t, client)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.result(t); err != nil {
			t.Fatal(err)
		}
		if fresh.serial().Cmp(s2) != 0 || r.Leaf().SerialNumber.Cmp(s2) != 0 {
			t.Fatalf("after rotation %d the server presents serial %v, want %v", i, fresh.serial(), s2)
		}
		// The connection made before any rotation carries on.
		if err := old.echo("still here"); err != nil {
			t.Fatalf("established connection broken by rotation %d: %v", i, err)
		}
	}
	if r.Reloads() != 4 {
		t.Errorf("Reloads() = %d, want 4", r.Reloads())
	}
	if n := logs.Count(`"msg":"TLS certificate loaded"`); n != 4 {
		t.Errorf("%d 'loaded' lines, want 4:\n%s", n, logs)
	}
}

func TestTLSMinimumVersion(t *testing.T) {
	ca, f, _ := servingFiles(t)
	r, _ := newTestTLSReloader(t, f, f.opts())
	srv := startTLSEcho(t, r.Config())

	if _, err := srv.dial(t, &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Fatal("a TLS 1.1 client was served")
	}
	if err := srv.result(t); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("server-side error %v, want a protocol version error", err)
	}
	tc, err := srv.dial(t, &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.result(t); err != nil {
		t.Fatal(err)
	}
	if v := tc.conn.ConnectionState().Version; v != tls.VersionTLS12 {
		t.Errorf("version %x, want TLS 1.2", v)
	}
}

func TestTLSBadUpdateKeepsServing(t *testing.T) {
	ca := testenv.NewCA(t, "serving-ca")
	f := newTLSFiles(t)
	c1, k1, s1 := ca.Serving(t)
	f.writePair(t, c1, k1)
	r, logs := newTestTLSReloader(t, f, f.opts())
	srv := startTLSEcho(t, r.Config())
	client := &tls.Config{RootCAs: ca.Pool()}

	c2, k2, s2 := ca.Serving(t)
	bad := map[string][2][]byte{
		"mismatched key": {c2, k1},
		"garbage cert":   {[]byte("not a certificate"), k2},
		"empty files":    {nil, nil},
		"truncated cert": {c2[:len(c2)/2], k2},
	}
	for name, pair := range bad {
		f.writePair(t, pair[0], pair[1])
		// Several reloads (polls) of the same bad state: one log line.
		for range 3 {
			r.reload()
		}
		if n := logs.Count("cannot load the TLS files"); n != 1 {
			t.Errorf("%s: %d error lines, want 1:\n%s", name, n, logs)
		}
		tc, err := srv.dial(t, client)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := srv.result(t); err != nil {
			t.Fatal(err)
		}
		if tc.serial().Cmp(s1) != 0 {
			t.Errorf("%s: serving serial %v, want the previous %v", name, tc.serial(), s1)
		}
		// Back to good between cases, so each bad case logs anew.
		f.writePair(t, c1, k1)
		r.reload()
		if !strings.Contains(logs.String(), "TLS files readable again") {
			t.Errorf("%s: recovery not logged:\n%s", name, logs)
		}
		logs.Reset()
	}
	if r.Reloads() != 1 {
		t.Errorf("Reloads() = %d after bad updates only, want 1", r.Reloads())
	}

	f.writePair(t, c2, k2)
	r.reload()
	tc, err := srv.dial(t, client)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.result(t); err != nil {
		t.Fatal(err)
	}
	if tc.serial().Cmp(s2) != 0 || r.Reloads() != 2 {
		t.Errorf("after a good update: serial %v (want %v), reloads %d", tc.serial(), s2, r.Reloads())
	}
}

func TestTLSStartupErrors(t *testing.T) {
	ca := testenv.NewCA(t, "serving-ca")
	f := newTLSFiles(t)
	c1, k1, _ := ca.Serving(t)
	_, k2, _ := ca.Serving(t)
	f.writePair(t, c1, k1)
	good := f.opts()
	write := func(name string, data []byte) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caWithBadBlock := append(append([]byte{}, ca.PEM...), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})...)
	cases := map[string]Options{
		"no key file":           {CertFile: good.CertFile},
		"no cert file":          {KeyFile: good.KeyFile},
		"missing cert":          {CertFile: good.CertFile + ".nope", KeyFile: good.KeyFile},
		"mismatched key":        {CertFile: good.CertFile, KeyFile: write("other.key", k2)},
		"subjects without CA":   {CertFile: good.CertFile, KeyFile: good.KeyFile, AllowedSubjects: []string{"guacd"}},
		"empty subject":         {CertFile: good.CertFile, KeyFile: good.KeyFile, ClientCAFile: write("ca.crt", ca.PEM), AllowedSubjects: []string{"guacd", " "}},
		"missing CA":            {CertFile: good.CertFile, KeyFile: good.KeyFile, ClientCAFile: good.CertFile + ".nope"},
		"CA file without certs": {CertFile: good.CertFile, KeyFile: good.KeyFile, ClientCAFile: write("ca.crt", k1)},
		"CA file with bad cert": {CertFile: good.CertFile, KeyFile: good.KeyFile, ClientCAFile: write("ca.crt", caWithBadBlock)},
		"negative poll":         {CertFile: good.CertFile, KeyFile: good.KeyFile, PollInterval: -1},
	}
	for name, opts := range cases {
		logs := &testlog.Buffer{}
		opts.Logger = slog.New(slog.NewJSONHandler(logs, nil))
		if _, err := New(opts); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(logs.String(), "PRIVATE KEY") {
			t.Errorf("%s: key material in %v / %s", name, err, logs)
		}
	}
	good.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	if _, err := New(good); err != nil {
		t.Errorf("good options refused: %v", err)
	}
}

// mtlsSetup is a serving pair plus a client CA in its own volume.
func mtlsSetup(t *testing.T, allowed ...string) (*Reloader, *testlog.Buffer, *tlsFiles, *tlsEchoServer, *testenv.CA, *tls.Config) {
	t.Helper()
	serving := testenv.NewCA(t, "serving-ca")
	clients := testenv.NewCA(t, "client-ca")
	f := newTLSFiles(t)
	c, k, _ := serving.Serving(t)
	f.writePair(t, c, k)
	f.writeCA(t, clients.PEM)
	opts := f.opts()
	opts.ClientCAFile = filepath.Join(f.caDir, "ca.crt")
	opts.AllowedSubjects = allowed
	opts.PollInterval = time.Hour
	r, logs := newTestTLSReloader(t, f, opts)
	srv := startTLSEcho(t, r.Config())
	return r, logs, f, srv, clients, &tls.Config{RootCAs: serving.Pool()}
}

// withCert presents c whatever CAs the server says it accepts (crypto/tls
// would otherwise send nothing when c's issuer is not among them), so the
// server's own verification is what gets tested.
func withCert(base *tls.Config, c ...tls.Certificate) *tls.Config {
	cfg := base.Clone()
	if len(c) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c[0], nil }
	}
	return cfg
}

func TestMutualTLSAllowlist(t *testing.T) {
	r, logs, _, srv, clients, base := mtlsSetup(t, "guacd", "guacd.guacamole.svc")
	stranger := testenv.NewCA(t, "client-ca") // same name, different key

	live, err := srv.dial(t, withCert(base, clients.Client(t, "guacd")))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.result(t); err != nil {
		t.Fatal(err)
	}

	accepted := map[string]tls.Certificate{
		"CN on the list":         clients.Client(t, "guacd"),
		"DNS SAN on the list":    clients.Client(t, "someone", "x.example", "guacd.guacamole.svc"),
		"DNS SAN, other case":    clients.Client(t, "", "GUACD.Guacamole.svc"),
		"CN and SAN on the list": clients.Client(t, "guacd.guacamole.svc", "guacd"),
	}
	for name, cert := range accepted {
		if _, err := srv.dial(t, withCert(base, cert)); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
		if err := srv.result(t); err != nil {
			t.Errorf("%s: server side: %v", name, err)
		}
	}

	// A server-auth-only certificate with an allowed CN: crypto/tls checks
	// the extended key usage against the CA before the allowlist is asked.
	sc, sk, _ := clients.Issue(t, "guacd", nil, nil, x509.ExtKeyUsageServerAuth)
	serverOnly, err := tls.X509KeyPair(sc, sk)
	if err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name       string
		certs      []tls.Certificate
		serverErr  string
		logSubject string // the refusal line names it; "" => refused by crypto/tls itself
	}{
		{"CN not on the list", []tls.Certificate{clients.Client(t, "mallory")}, errSubjectRefused.Error(), "CN=mallory"},
		{"SAN not on the list", []tls.Certificate{clients.Client(t, "eve", "guacd.evil.example", "guacd.guacamole.svc.evil")}, errSubjectRefused.Error(), "CN=eve"},
		{"CN as suffix", []tls.Certificate{clients.Client(t, "xguacd")}, errSubjectRefused.Error(), "CN=xguacd"},
		{"CN differs in case", []tls.Certificate{clients.Client(t, "GUACD")}, errSubjectRefused.Error(), "CN=GUACD"},
		{"no client certificate", nil, "client didn't provide a certificate", ""},
		{"other CA", []tls.Certificate{stranger.Client(t, "guacd")}, "unknown authority", ""},
		{"server-auth only", []tls.Certificate{serverOnly}, "incompatible key usage", ""},
	}
	for _, c := range refused {
		before := logs.Count(`"msg":"TLS client refused"`)
		if _, err := srv.dial(t, withCert(base, c.certs...)); err == nil {
			t.Errorf("%s: served", c.name)
		}
		if err := srv.result(t); err == nil || !strings.Contains(err.Error(), c.serverErr) {
			t.Errorf("%s: server-side handshake error %v, want %q", c.name, err, c.serverErr)
		}
		if c.logSubject != "" {
			if logs.Count(`"msg":"TLS client refused"`) != before+1 || !strings.Contains(logs.String(), `"subject":"`+c.logSubject+`"`) {
				t.Errorf("%s: refusal not logged with its subject:\n%s", c.name, logs)
			}
		}
		if err := live.echo("live after " + c.name); err != nil {
			t.Fatalf("live connection broken after %s: %v", c.name, err)
		}
	}
	if !strings.Contains(logs.String(), `"reason":"subject not on the allowlist"`) || !strings.Contains(logs.String(), `"remote":"127.0.0.1:`) {
		t.Errorf("refusals lack reason or remote address:\n%s", logs)
	}
	if r.Reloads() != 1 {
		t.Errorf("Reloads() = %d", r.Reloads())
	}
}

func TestMutualTLSWithoutAllowlistAcceptsWhatTheCASigned(t *testing.T) {
	_, logs, _, srv, clients, base := mtlsSetup(t)
	if !strings.Contains(logs.String(), "without an allowlist") {
		t.Errorf("no warning about the missing allowlist:\n%s", logs)
	}
	if _, err := srv.dial(t, withCert(base, clients.Client(t, "anyone"))); err != nil {
		t.Errorf("CA-signed certificate refused: %v", err)
	}
	if err := srv.result(t); err != nil {
		t.Error(err)
	}
	if _, err := srv.dial(t, withCert(base, testenv.NewCA(t, "other").Client(t, "anyone"))); err == nil {
		t.Error("certificate from another CA served")
	}
	if err := srv.result(t); err == nil {
		t.Error("server-side handshake succeeded for another CA")
	}
	if _, err := srv.dial(t, base); err == nil {
		t.Error("no certificate served")
	}
	if err := srv.result(t); err == nil {
		t.Error("server-side handshake succeeded without a client certificate")
	}
}

func TestMutualTLSFollowsCARotation(t *testing.T) {
	r, _, f, srv, oldCA, base := mtlsSetup(t, "guacd")
	runTLSReloader(t, r)
	live, err := srv.dial(t, withCert(base, oldCA.Client(t, "guacd")))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.result(t); err != nil {
		t.Fatal(err)
	}

	newCA := testenv.NewCA(t, "client-ca-2")
	changed := r.Changed()
	f.writeCA(t, newCA.PEM)
	filewatchtest.WaitChange(t, changed, "TLS configuration")

	if _, err := srv.dial(t, withCert(base, oldCA.Client(t, "guacd"))); err == nil {
		t.Error("a certificate from the replaced CA was served")
	}
	if err := srv.result(t); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("server-side: %v", err)
	}
	if _, err := srv.dial(t, withCert(base, newCA.Client(t, "guacd"))); err != nil {
		t.Errorf("a certificate from the new CA was refused: %v", err)
	}
	if err := srv.result(t); err != nil {
		t.Error(err)
	}
	if err := live.echo("after CA rotation"); err != nil {
		t.Errorf("established connection broken by the CA rotation: %v", err)
	}

	// A bundle of both CAs (the usual overlap during a CA rotation).
	changed = r.Changed()
	f.writeCA(t, append(append([]byte{}, oldCA.PEM...), newCA.PEM...))
	filewatchtest.WaitChange(t, changed, "TLS configuration")
	for _, ca := range []*testenv.CA{oldCA, newCA} {
		if _, err := srv.dial(t, withCert(base, ca.Client(t, "guacd"))); err != nil {
			t.Errorf("%s refused with a two-CA bundle: %v", ca.Cert.Subject, err)
		}
		if err := srv.result(t); err != nil {
			t.Error(err)
		}
	}
}

// With mutual TLS no session is resumed: a resumed session would skip
// verification against the CA as it is now. Without it resumption works,
// which shows the check below can fail.
func TestMutualTLSDisablesResumption(t *testing.T) {
	resumed := func(t *testing.T, srv *tlsEchoServer, cfg *tls.Config) bool {
		t.Helper()
		cfg = cfg.Clone()
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		var last bool
		for range 2 {
			tc, err := srv.dial(t, cfg) // the echo round trip receives the ticket
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.result(t); err != nil {
				t.Fatal(err)
			}
			last = tc.conn.ConnectionState().DidResume
		}
		return last
	}
	_, _, _, msrv, clients, base := mtlsSetup(t, "guacd")
	if resumed(t, msrv, withCert(base, clients.Client(t, "guacd"))) {
		t.Error("a mutual-TLS session was resumed")
	}

	ca, f, _ := servingFiles(t)
	r, _ := newTestTLSReloader(t, f, f.opts())
	if !resumed(t, startTLSEcho(t, r.Config()), &tls.Config{RootCAs: ca.Pool()}) {
		t.Error("plain TLS did not resume: the mutual-TLS check above proves nothing")
	}
}

func TestTLSReloaderRunTwice(t *testing.T) {
	_, f, _ := servingFiles(t)
	r, _ := newTestTLSReloader(t, f, f.opts())
	runTLSReloader(t, r)
	if err := r.Run(context.Background()); err == nil {
		t.Error("second Run accepted")
	}
}
