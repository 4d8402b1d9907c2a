// Package hmac issues and checks the session tokens that authorise every
// session through k8s-ws-proxy, and keeps the HMAC keys they are signed with.
//
// A token is a compact JWS (a JWT) signed with HMAC-SHA256 whose header names
// the key by a kid derived from the key itself, so a control plane in any
// language can mint one with a stock JWT library and the key alone. Parsing
// and claim validation are delegated to github.com/golang-jwt/jwt/v5 in its
// strictest configuration: this is the product's security boundary, and a
// widely reviewed parser is worth more here than a few microseconds.
//
// The pieces:
//
//   - [Signer] mints tokens (Go control planes, the CLI and tests).
//   - [Verifier] checks a token and consumes its jti (single use); every
//     rejection carries a stable [Reason] for logs and metrics.
//   - [Keyring] holds the keys read from a mounted Kubernetes Secret and
//     reloads them when the kubelet swaps the volume's ..data symlink.
//
// docs/tokens.md describes the wire format for control-plane authors.
package hmac
