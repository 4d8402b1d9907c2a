package testpki

import (
	"crypto/x509"
	"net"
	"testing"
	"time"
)

// A leaf verifies against its CA for the usages asked, and only those.
func TestIssue(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Cert.NotBefore.After(time.Now().Add(-time.Minute)) {
		t.Errorf("CA: IsCA=%v NotBefore=%v", ca.Cert.IsCA, ca.Cert.NotBefore)
	}
	pair, err := ca.IssueTLS(CertSpec{CommonName: "node-a", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	verify := func(ca *CA, usage x509.ExtKeyUsage) error {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
	if err := verify(ca, x509.ExtKeyUsageServerAuth); err != nil {
		t.Errorf("server leaf does not verify: %v", err)
	}
	if verify(ca, x509.ExtKeyUsageClientAuth) == nil {
		t.Error("server-only leaf verified for client auth")
	}
	if verify(other, x509.ExtKeyUsageServerAuth) == nil {
		t.Error("leaf verified against another CA of the same name")
	}
	c1, _, err := ca.Issue(CertSpec{CommonName: "a", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	c2, _, _ := ca.Issue(CertSpec{CommonName: "a", Client: true})
	s1, err1 := Serial(c1)
	s2, err2 := Serial(c2)
	if err1 != nil || err2 != nil || s1.Cmp(s2) == 0 {
		t.Errorf("serials %v %v (%v, %v): want two distinct", s1, s2, err1, err2)
	}
	if _, _, err := ca.Issue(CertSpec{CommonName: "nothing"}); err == nil {
		t.Error("a certificate with no usage was issued")
	}
}
