// Package proxy is the WebSocket side of k8s-ws-proxy: it serves the API
// server's exec and attach paths, authorises each request with a signed
// session token before upgrading, speaks the Kubernetes channel protocols
// (channel.k8s.io, v4 and v5, binary and base64) toward the client, and
// bridges the session to an exec opened by package exec.
//
// The wire contract it keeps (frames of at most MaxFrameSize bytes including
// the channel byte, never empty, the exit status on channel 3 after the last
// output byte, EOF without a close frame ending the session) is written down
// in docs/wire-protocol.md; guacd depends on every line of it.
package proxy
