package kubeapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"

	"k8s.io/client-go/util/keyutil"

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
	if privPEM, err = keyutil.MarshalPrivateKeyToPEM(key); err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, err
	}
	return privPEM, pem.EncodeToMemory(&pem.Block{Type: keyutil.PublicKeyBlockType, Bytes: pubDER}), nil
}
