package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"testing"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testpki"
)

// CA is a throwaway certificate authority for TLS tests (testpki's, with
// helpers that fail the test instead of returning errors).
type CA struct {
	*testpki.CA
	PEM []byte // Cert, PEM-encoded
}

// NewCA makes a CA named name.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	ca, err := testpki.NewCA(name)
	if err != nil {
		tb.Fatal(err)
	}
	return &CA{CA: ca, PEM: ca.CertPEM}
}

// Issue returns a leaf's certificate PEM, key PEM and serial number.
func (ca *CA) Issue(tb testing.TB, cn string, dns []string, ips []net.IP, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte, serial *big.Int) {
	tb.Helper()
	spec := testpki.CertSpec{CommonName: cn, DNSNames: dns, IPs: ips,
		Server: usage == x509.ExtKeyUsageServerAuth, Client: usage == x509.ExtKeyUsageClientAuth}
	certPEM, keyPEM, err := ca.CA.Issue(spec)
	if err != nil {
		tb.Fatal(err)
	}
	if serial, err = testpki.Serial(certPEM); err != nil {
		tb.Fatal(err)
	}
	return certPEM, keyPEM, serial
}

// Serving issues the proxy's serving certificate: CN k8s-ws-proxy, DNS
// k8s-ws-proxy.test and IP 127.0.0.1.
func (ca *CA) Serving(tb testing.TB) (certPEM, keyPEM []byte, serial *big.Int) {
	tb.Helper()
	return ca.Issue(tb, "k8s-ws-proxy", []string{"k8s-ws-proxy.test"}, []net.IP{net.IPv4(127, 0, 0, 1)}, x509.ExtKeyUsageServerAuth)
}

// Client issues a client certificate usable in a tls.Config.
func (ca *CA) Client(tb testing.TB, cn string, dns ...string) tls.Certificate {
	tb.Helper()
	c, k, _ := ca.Issue(tb, cn, dns, nil, x509.ExtKeyUsageClientAuth)
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		tb.Fatal(err)
	}
	return pair
}
