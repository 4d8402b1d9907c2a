package e2e

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

// tlsEnv is a proxy serving TLS from kubelet-style Secret volumes.
type tlsEnv struct {
	*env
	servingCA *testenv.CA
	clientCA  *testenv.CA // nil without mutual TLS
	tlsDir    string
	caDir     string
	serial    *big.Int // of the serving certificate last written
}

// startTLSEnv starts the proxy with --tls-cert-file/--tls-key-file and,
// if allowed is non-nil, --client-ca-file and --client-allowed-subjects.
func startTLSEnv(t *testing.T, allowed []string) *tlsEnv {
	t.Helper()
	root := t.TempDir()
	te := &tlsEnv{servingCA: testenv.NewCA(t, "serving-ca"), tlsDir: filepath.Join(root, "tls"), caDir: filepath.Join(root, "client-ca")}
	te.rotate(t)
	args := []string{"--tls-cert-file", filepath.Join(te.tlsDir, "tls.crt"), "--tls-key-file", filepath.Join(te.tlsDir, "tls.key")}
	if allowed != nil {
		te.clientCA = testenv.NewCA(t, "client-ca")
		filewatchtest.WriteSecretDir(t, te.caDir, map[string][]byte{"ca.crt": te.clientCA.PEM})
		args = append(args, "--client-ca-file", filepath.Join(te.caDir, "ca.crt"),
			"--client-allowed-subjects", strings.Join(allowed, ","))
	}
	te.env = startEnv(t, envOptions{extraArgs: args})
	return te
}

// rotate writes a new serving certificate the way the kubelet updates a
// Secret volume and returns the moment of the switch.
func (te *tlsEnv) rotate(t *testing.T) time.Time {
	t.Helper()
	c, k, serial := te.servingCA.Serving(t)
	te.serial = serial
	return filewatchtest.SwapSecretDir(t, te.tlsDir, map[string][]byte{"tls.crt": c, "tls.key": k})
}

// clientConfig trusts the serving CA and, given a certificate, presents it
// whatever CAs the server names (so the server's checks are what is
// tested, not crypto/tls's client-side choice).
func (te *tlsEnv) clientConfig(cert ...tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: te.servingCA.Pool(), NextProtos: []string{"http/1.1"}} // as guacd offers
	if len(cert) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert[0], nil }
	}
	return cfg
}

// catRequest is the path and header of a cat session with a fresh token.
func (te *tlsEnv) catRequest() (path string, hdr http.Header, tok string) {
	c := te.claims("cat")
	c.Stdin = true
	tok = te.mint(c)
	return "/api/v1/namespaces/" + testNamespace + "/pods/" + testPod + "/exec?command=cat&container=" + testContainer, bearer(tok), tok
}

func (te *tlsEnv) dialWSS(cfg *tls.Config, path string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io"}, HandshakeTimeout: 10 * time.Second, TLSClientConfig: cfg}
	return d.Dial("wss://"+te.Addr+path, hdr)
}

// openCatTLS opens a cat session over wss:// and proves it with an echo.
func (te *tlsEnv) openCatTLS(t *testing.T, cfg *tls.Config) *rawSession {
	t.Helper()
	path, hdr, _ := te.catRequest()
	ws, resp, err := te.dialWSS(cfg, path, hdr)
	if err != nil {
		t.Fatalf("wss session: %v (response %v)", err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	r := &rawSession{t: t, ws: ws}
	r.echo("opened")
	return r
}

// handshakeSerial runs a bare TLS handshake and returns the serial of the
// certificate the proxy presented.
func (te *tlsEnv) handshakeSerial(t *testing.T) *big.Int {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", te.Addr, te.clientConfig())
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// plainHTTPToTLSPort sends an HTTP request carrying a token to the TLS
// port in the clear and returns what comes back before the connection
// closes.
func (te *tlsEnv) plainHTTPToTLSPort(t *testing.T) (answer, tok string) {
	t.Helper()
	path, _, tok := te.catRequest()
	c, err := net.DialTimeout("tcp", te.Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\nAuthorization: Bearer %s\r\n\r\n", path, te.Addr, tok)
	// The server closes with the rest of the request unread, so the end
	// is a reset rather than a FIN; the answer arrives before it.
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading the answer to plain HTTP: %v (got %q)", err, b)
	}
	return string(b), tok
}

// checkPlainHTTPRefused: Go's server sniffs the TLS record header, sees
// HTTP, answers 400 in the clear and closes; the request is never parsed,
// so its token is never looked at.
func (te *tlsEnv) checkPlainHTTPRefused(t *testing.T) {
	t.Helper()
	rejectedBefore := len(te.LogLines("session rejected"))
	mark := te.LogMark()
	answer, tok := te.plainHTTPToTLSPort(t)
	want := "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
	if answer != want {
		t.Errorf("plain HTTP to the TLS port answered %q, want %q", answer, want)
	}
	te.WaitLogText(10*time.Second, mark, "TLS handshake error from 127.0.0.1:", "client sent an HTTP request to an HTTPS server")
	if n := len(te.LogLines("session rejected")); n != rejectedBefore {
		t.Errorf("the HTTP layer saw the plaintext request (%d new rejections)", n-rejectedBefore)
	}
	if strings.Contains(te.LogText(), tok[strings.LastIndexByte(tok, '.')+1:]) {
		t.Error("the token of the plaintext request is in the log")
	}
}

// serverState is the TLS state of a session's connection.
func serverState(r *rawSession) tls.ConnectionState {
	return r.ws.NetConn().(*tls.Conn).ConnectionState()
}

// TestTLSSessionAndCertRotation: a session over wss://, then the serving
// certificate swapped kubelet-style while that session streams: the next
// handshakes present the new certificate, the session never notices, and
// plain HTTP to the TLS port gets Go's 400 without disturbing it.
func TestTLSSessionAndCertRotation(t *testing.T) {
	te := startTLSEnv(t, nil)
	cfg := te.clientConfig()
	live := te.openCatTLS(t, cfg)
	st := serverState(live)
	if st.PeerCertificates[0].SerialNumber.Cmp(te.serial) != 0 || st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != "http/1.1" {
		t.Fatalf("serial %v (want %v), version %x, ALPN %q", st.PeerCertificates[0].SerialNumber, te.serial, st.Version, st.NegotiatedProtocol)
	}
	// TLS 1.2 is the floor, and is served.
	c12 := cfg.Clone()
	c12.MinVersion, c12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if v := serverState(te.openCatTLS(t, c12)).Version; v != tls.VersionTLS12 {
		t.Errorf("TLS 1.2 client got version %x", v)
	}
	c11 := cfg.Clone()
	c11.MinVersion, c11.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := tls.Dial("tcp", te.Addr, c11); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("TLS 1.1 client: %v, want a protocol version refusal", err)
	}

	for round := range 2 {
		old := te.serial
		switched := te.rotate(t)
		for i := 0; ; i++ {
			// The session streams on while the proxy picks the new files up.
			live.echo(fmt.Sprintf("streaming-%d-%d", round, i))
			if te.handshakeSerial(t).Cmp(te.serial) == 0 {
				break
			}
			if time.Since(switched) > 5*time.Second {
				t.Fatalf("the proxy still presents serial %v 5s after the swap to %v", old, te.serial)
			}
		}
		t.Logf("rotation %d: new serving certificate on handshakes %v after the ..data rename", round, time.Since(switched))
		want := te.serial.String()
		te.WaitLog(10*time.Second, "TLS certificate loaded", func(m map[string]any) bool { return m["serial"] == want })

		fresh := te.openCatTLS(t, cfg)
		if got := serverState(fresh).PeerCertificates[0].SerialNumber; got.Cmp(te.serial) != 0 {
			t.Errorf("a new session got serial %v, want %v", got, te.serial)
		}
		// The live session still has the certificate it was opened with.
		if got := serverState(live).PeerCertificates[0].SerialNumber; got.Cmp(te.serial) == 0 {
			t.Errorf("live session reports the new serial")
		}
		live.echo(fmt.Sprintf("after-rotation-%d", round))
	}

	te.checkPlainHTTPRefused(t)
	live.echo("after-plain-http")
	// A ws:// client pointed at the TLS port sees the same 400.
	path, hdr, _ := te.catRequest()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	if ws, resp, err := d.Dial("ws://"+te.Addr+path, hdr); err == nil {
		ws.Close()
		t.Error("ws:// to the TLS port upgraded")
	} else if resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("ws:// to the TLS port: %v, response %v; want 400", err, resp)
	}
	live.echo("after-ws-client")
}

// TestMutualTLS: client certificates on the allowlist (by CN or DNS SAN)
// get sessions; everything else is refused in the TLS handshake, before
// the HTTP request, and so before the token, is read. A live session is
// unaffected by each refusal and by a client CA rotation.
func TestMutualTLS(t *testing.T) {
	te := startTLSEnv(t, []string{"guacd", "guacd.guacamole.svc"})
	guacd := te.clientConfig(te.clientCA.Client(t, "guacd"))
	live := te.openCatTLS(t, guacd)

	// Probes stay plain HTTP on the health port, without a certificate.
	if st := readyz(t, te.Health); st != http.StatusOK {
		t.Errorf("/readyz on the health port: %d", st)
	}
	te.openCatTLS(t, te.clientConfig(te.clientCA.Client(t, "someone", "guacd.guacamole.svc"))).echo("allowed-by-dns-san")

	refused := []struct {
		name     string
		cfg      *tls.Config
		logParts []string
	}{
		{"subject not on the allowlist", te.clientConfig(te.clientCA.Client(t, "mallory", "mallory.example")),
			[]string{`"msg":"TLS client refused"`, `"subject":"CN=mallory"`, `"reason":"subject not on the allowlist"`, `"remote":"127.0.0.1:`}},
		{"no client certificate", te.clientConfig(),
			[]string{"TLS handshake error from 127.0.0.1:", "client didn't provide a certificate"}},
		{"certificate from another CA", te.clientConfig(testenv.NewCA(t, "client-ca").Client(t, "guacd")),
			[]string{"TLS handshake error from 127.0.0.1:", "unknown authority"}},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			rejectedBefore := len(te.LogLines("session rejected"))
			mark := te.LogMark()
			path, hdr, _ := te.catRequest()
			ws, resp, err := te.dialWSS(c.cfg, path, hdr)
			if err == nil {
				ws.Close()
				t.Fatal("served")
			}
			if resp != nil {
				t.Errorf("got HTTP %d: the refusal came after the handshake", resp.StatusCode)
			}
			if !strings.Contains(err.Error(), "remote error: tls:") {
				t.Errorf("client error %v, want a TLS alert", err)
			}
			t.Logf("client saw: %v", err)
			te.WaitLogText(10*time.Second, mark, c.logParts...)
			if n := len(te.LogLines("session rejected")); n != rejectedBefore {
				t.Errorf("the HTTP layer saw the request (%d new rejections)", n-rejectedBefore)
			}
			// The token is single-use, yet it still opens a session on an
			// allowed connection: the refused connection never got it read.
			ws, resp, err = te.dialWSS(guacd, path, hdr)
			if err != nil {
				t.Fatalf("the refused connection's token no longer works: %v (response %v)", err, resp)
			}
			(&rawSession{t: t, ws: ws}).echo("token-still-fresh")
			ws.Close()
			live.echo("live-after-" + strings.ReplaceAll(c.name, " ", "-"))
		})
	}
	te.checkPlainHTTPRefused(t)
	live.echo("live-after-plain-http")

	// The client CA rotates: certificates of the new CA are accepted from
	// the next handshake on, the old CA's are refused, and the session
	// opened with an old-CA certificate carries on.
	loaded := len(te.LogLines("TLS certificate loaded"))
	newCA := testenv.NewCA(t, "client-ca-2")
	filewatchtest.SwapSecretDir(t, te.caDir, map[string][]byte{"ca.crt": newCA.PEM})
	waitFor(t, 10*time.Second, "the proxy reloads the client CA", func() bool {
		return len(te.LogLines("TLS certificate loaded")) > loaded
	})
	te.openCatTLS(t, te.clientConfig(newCA.Client(t, "guacd"))).echo("new-ca")
	path, hdr, _ := te.catRequest()
	if ws, _, err := te.dialWSS(te.clientConfig(te.clientCA.Client(t, "guacd")), path, hdr); err == nil {
		ws.Close()
		t.Error("a certificate of the replaced client CA was served")
	}
	live.echo("live-after-ca-rotation")
}

// TestTLSNoTokenInOutput: a full guacd-shaped session over mutual TLS with
// the token in the URL path, a replay of that URL, and refused attempts
// carrying tokens (plain HTTP, no client certificate): no token, nor its
// payload or signature part, appears anywhere in the proxy's log.
func TestTLSNoTokenInOutput(t *testing.T) {
	te := startTLSEnv(t, []string{"guacd"})
	guacd := te.clientConfig(te.clientCA.Client(t, "guacd"))
	var tokens []string

	c := te.claims("/bin/sh", "-c", "read x; echo got-$x; exit 3")
	c.TTY, c.Stdin = true, true
	tok := te.mint(c)
	tokens = append(tokens, tok)
	esc := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	path := "/api/v1/namespaces/" + testNamespace + "/pods/" + tok + "/exec?command=" + esc(strings.Join(c.Command, " ")) +
		"&container=" + testContainer + "&stdin=true&stdout=true&tty=true"
	// As guacd: Host and Origin carry the hostname parameter alone, and
	// SNI is that name even though it is an IP.
	d := websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}, HandshakeTimeout: 10 * time.Second, TLSClientConfig: guacd,
		NetDial: func(network, _ string) (net.Conn, error) { return net.Dial(network, te.Addr) }}
	origin := http.Header{"Origin": {"http://127.0.0.1"}}
	ws, resp, err := d.Dial("wss://127.0.0.1"+path, origin)
	if err != nil {
		var body []byte
		if resp != nil {
			body, _ = io.ReadAll(resp.Body)
		}
		t.Fatalf("guacd-shaped wss session: %v (response %v: %s)", err, resp, body)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("\x00hello\r")); err != nil {
		t.Fatal(err)
	}
	var out, status strings.Builder
	ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			break // the server closes after the status
		}
		switch {
		case len(msg) > 0 && msg[0] == 1:
			out.Write(msg[1:])
		case len(msg) > 0 && msg[0] == 3:
			status.Write(msg[1:])
		}
	}
	ws.Close()
	if !strings.Contains(out.String(), "got-hello") || !strings.Contains(status.String(), `"message":"3"`) {
		t.Fatalf("session output %q, status %q", out.String(), status.String())
	}

	// The same URL again: refused at the HTTP layer as a replay.
	if ws, resp, err := d.Dial("wss://127.0.0.1"+path, origin); err == nil {
		ws.Close()
		t.Error("replayed token accepted")
	} else if resp == nil {
		t.Errorf("replay: %v", err)
	}
	te.WaitLog(10*time.Second, "session rejected", nil)

	// Refused before HTTP: plain HTTP, and no client certificate.
	_, plainTok := te.plainHTTPToTLSPort(t)
	tokens = append(tokens, plainTok)
	p2, hdr2, tok2 := te.catRequest()
	tokens = append(tokens, tok2)
	if ws, _, err := te.dialWSS(te.clientConfig(), p2, hdr2); err == nil {
		ws.Close()
		t.Error("served without a client certificate")
	}

	te.Stop()
	te.WaitLog(10*time.Second, "stopped", nil)
	log := te.LogText()
	if len(te.LogLines("session closed")) != 1 || !strings.Contains(log, "TLS handshake error") {
		t.Fatalf("the log does not show the run it should:\n%s", log)
	}
	for i, tok := range tokens {
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("token %d has %d parts", i, len(parts))
		}
		for what, s := range map[string]string{"token": tok, "payload": parts[1], "signature": parts[2]} {
			if strings.Contains(log, s) {
				t.Errorf("token %d: its %s appears in the proxy's log", i, what)
			}
		}
	}
}
