// Package tlsreload serves TLS from certificate files that follow a
// mounted kubernetes.io/tls Secret, with optional mutual TLS and a subject
// allowlist. The files are re-read through package filewatch, like the HMAC
// keys.
package tlsreload

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch"
)

// Options configures a Reloader.
type Options struct {
	// CertFile and KeyFile are the serving certificate (PEM, leaf first,
	// then any intermediates) and its private key, typically tls.crt and
	// tls.key of a mounted kubernetes.io/tls Secret. Both are required.
	CertFile, KeyFile string
	// ClientCAFile, when set, turns on mutual TLS: every connection must
	// present a client certificate that chains to one of the PEM
	// certificates in this file, or the handshake fails.
	ClientCAFile string
	// AllowedSubjects, with ClientCAFile, further restricts which verified
	// client certificates are accepted: the leaf's subject CN must equal
	// one of them, or one of its DNS SANs must (case-insensitively, as DNS
	// names compare). Empty accepts any certificate the CA signed.
	AllowedSubjects []string
	// PollInterval is the safety-net re-read of the files. 0 =>
	// filewatch.DefaultPoll.
	PollInterval time.Duration
	// Logger receives reloads, reload failures and refused client
	// certificates. nil => slog.Default().
	Logger *slog.Logger
}

// Reloader serves TLS with certificates that follow their files: every new
// handshake gets the configuration built from the files as last read, while
// established connections keep the one they negotiated. A bad update keeps
// the previous configuration (logged once); only the first load, in New,
// must succeed.
type Reloader struct {
	opts    Options
	log     *slog.Logger
	allowed []string
	r       *filewatch.Reloader[*tlsState]
}

// tlsState is one consistent reading of the files. It is replaced, never
// mutated.
type tlsState struct {
	config *tls.Config
	leaf   *x509.Certificate
	sum    [sha256.Size]byte // of what was read, to tell a real change
}

// New reads the files once and fails if they do not yield a usable
// configuration. Call Run to follow changes.
func New(opts Options) (*Reloader, error) {
	if opts.CertFile == "" || opts.KeyFile == "" {
		return nil, errors.New("tls: both a certificate file and a key file are needed")
	}
	if opts.ClientCAFile == "" && len(opts.AllowedSubjects) > 0 {
		return nil, errors.New("tls: allowed client subjects need a client CA file")
	}
	if opts.PollInterval < 0 {
		return nil, errors.New("tls: negative poll interval")
	}
	var allowed []string
	for _, s := range opts.AllowedSubjects {
		if s = strings.TrimSpace(s); s == "" {
			return nil, errors.New("tls: empty entry in the allowed client subjects")
		}
		allowed = append(allowed, s)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &Reloader{opts: opts, allowed: allowed, log: opts.Logger.With("component", "tls")}
	dirs := []string{filepath.Dir(opts.CertFile), filepath.Dir(opts.KeyFile)}
	if opts.ClientCAFile != "" {
		dirs = append(dirs, filepath.Dir(opts.ClientCAFile))
	}
	var err error
	r.r, err = filewatch.NewReloader(filewatch.ReloaderOptions[*tlsState]{
		Dirs:     dirs,
		Poll:     opts.PollInterval,
		Logger:   r.log,
		Required: true,
		Load:     r.load,
		OnLoad:   r.logLoaded,
		OnError: func(err error) {
			r.log.Error("cannot load the TLS files; still serving the previous certificate", "err", err.Error())
		},
		OnRecover: func() { r.log.Info("TLS files readable again; they are unchanged") },
	})
	if err != nil {
		return nil, err
	}
	if opts.ClientCAFile != "" && len(allowed) == 0 {
		r.log.Warn("mutual TLS without an allowlist: any client certificate the CA signed is accepted")
	}
	return r, nil
}

// Config returns the configuration to give tls.NewListener. It holds no
// certificate itself: every handshake gets the current one from
// GetConfigForClient.
func (r *Reloader) Config() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
		GetConfigForClient: r.configForClient,
	}
}

// Leaf returns the serving certificate currently handed to new handshakes.
func (r *Reloader) Leaf() *x509.Certificate { return r.r.Value().leaf }

// Reloads returns how many distinct configurations have been loaded,
// counting the first.
func (r *Reloader) Reloads() uint64 { return r.r.Changes() }

// Changed returns a channel closed at the next change of configuration.
// Take the channel, then check the state, then wait: no change is missed.
func (r *Reloader) Changed() <-chan struct{} { return r.r.Changed() }

// Run follows the files' directories until ctx is done, and returns nil
// once every goroutine it started has exited.
func (r *Reloader) Run(ctx context.Context) error { return r.r.Run(ctx) }

func (r *Reloader) reload() { _ = r.r.Reload() }

// load reads the files; on error it keeps cur.
func (r *Reloader) load(cur *tlsState) (*tlsState, string, error) {
	st, err := r.read()
	if err != nil {
		fp := ""
		if cur != nil {
			fp = hex.EncodeToString(cur.sum[:])
		}
		return cur, fp, err
	}
	return st, hex.EncodeToString(st.sum[:]), nil
}

// read loads the files into a new state; it touches nothing shared.
func (r *Reloader) read() (*tlsState, error) {
	certPEM, err := os.ReadFile(r.opts.CertFile)
	if err != nil {
		return nil, fmt.Errorf("certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(r.opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// X509KeyPair's errors name the problem, never the key's bytes.
		return nil, fmt.Errorf("%s, %s: %w", r.opts.CertFile, r.opts.KeyFile, err)
	}
	h := sha256.New()
	for _, der := range pair.Certificate {
		h.Write(der)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
		Certificates: []tls.Certificate{pair},
	}
	if r.opts.ClientCAFile != "" {
		caPEM, err := os.ReadFile(r.opts.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client CA file: %w", err)
		}
		pool, err := parseCAs(caPEM)
		if err != nil {
			return nil, fmt.Errorf("client CA file %s: %w", r.opts.ClientCAFile, err)
		}
		h.Write([]byte{0})
		h.Write(caPEM)
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = pool
		// A resumed session would skip verification against the CA as it
		// is now; sessions are long-lived, so full handshakes cost little.
		cfg.SessionTicketsDisabled = true
	}
	st := &tlsState{config: cfg, leaf: pair.Leaf}
	h.Sum(st.sum[:0])
	return st, nil
}

// parseCAs reads every CERTIFICATE block of a PEM bundle. Unlike
// x509.CertPool.AppendCertsFromPEM it refuses the bundle if any
// certificate in it is malformed, instead of trusting what is left of it.
func parseCAs(data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return pool, nil
}

func (r *Reloader) logLoaded(st *tlsState) {
	attrs := []any{
		"subject", st.leaf.Subject.String(),
		"dns_names", st.leaf.DNSNames,
		"ip_addresses", ipStrings(st.leaf.IPAddresses),
		"serial", st.leaf.SerialNumber.String(),
		"not_after", st.leaf.NotAfter.UTC().Format(time.RFC3339),
		"client_auth", st.config.ClientCAs != nil,
	}
	now := time.Now()
	if now.After(st.leaf.NotAfter) || now.Before(st.leaf.NotBefore) {
		r.log.Warn("TLS certificate loaded, but it is outside its validity period; clients will refuse it", attrs...)
		return
	}
	r.log.Info("TLS certificate loaded", attrs...)
}

// configForClient hands a new handshake the current configuration. With
// mutual TLS it is a copy whose VerifyConnection knows the peer's address,
// so that a refusal can be logged with it.
func (r *Reloader) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	cfg := r.r.Value().config
	if cfg.ClientCAs == nil {
		return cfg, nil
	}
	var remote string
	if hello.Conn != nil {
		remote = hello.Conn.RemoteAddr().String()
	}
	c := cfg.Clone()
	c.VerifyConnection = func(cs tls.ConnectionState) error { return r.checkClient(cs, remote) }
	return c, nil
}

// errSubjectRefused is what a client whose certificate is not on the list
// sees as the handshake failure's cause, on the server side.
var errSubjectRefused = errors.New("client certificate subject not allowed")

// checkClient runs after crypto/tls has verified the client's chain
// against the CA (RequireAndVerifyClientCert), still inside the handshake:
// a refused client never gets to send a request, let alone a token.
func (r *Reloader) checkClient(cs tls.ConnectionState, remote string) error {
	if len(cs.PeerCertificates) == 0 {
		// crypto/tls refuses this before calling us; kept as a guard.
		r.log.Warn("TLS client refused", "remote", remote, "reason", "no client certificate")
		return errors.New("no client certificate")
	}
	leaf := cs.PeerCertificates[0]
	if len(r.allowed) == 0 || subjectAllowed(leaf, r.allowed) {
		r.log.Debug("TLS client accepted", "remote", remote, "subject", leaf.Subject.String(), "dns_names", leaf.DNSNames)
		return nil
	}
	r.log.Warn("TLS client refused", "remote", remote, "reason", "subject not on the allowlist",
		"subject", leaf.Subject.String(), "dns_names", leaf.DNSNames, "issuer", leaf.Issuer.String())
	return errSubjectRefused
}

// subjectAllowed matches the leaf's CN exactly and its DNS SANs as DNS
// names compare (case-insensitively). IP, URI and e-mail SANs never match.
func subjectAllowed(leaf *x509.Certificate, allowed []string) bool {
	if leaf.Subject.CommonName != "" && slices.Contains(allowed, leaf.Subject.CommonName) {
		return true
	}
	for _, name := range leaf.DNSNames {
		for _, a := range allowed {
			if strings.EqualFold(name, a) {
				return true
			}
		}
	}
	return false
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}
