package kubeapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testpki"
)

// CA and CertSpec are the harness's certificate authority and leaf
// description, shared with the other test harnesses.
type (
	CA       = testpki.CA
	CertSpec = testpki.CertSpec
)

var newCA = testpki.NewCA

// newSigningKey returns the service-account token signing key pair: the
// private key for --service-account-signing-key-file and the public key for
// --service-account-key-file.
func newSigningKey() (privPEM, pubPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	privDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("EC PRIVATE KEY", privDER), pemBlock("PUBLIC KEY", pubDER), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
