package proxy

import (
	"bytes"
	"testing"
)

// FuzzDecodeFrame: no input may panic the decoder, and whatever decodes
// re-encodes to a frame that decodes the same.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(false, []byte{0, 'l', 's', '\r'})
	f.Add(false, []byte{4, '{', '}'})
	f.Add(false, []byte{255, 0})
	f.Add(true, []byte("0bHMNCg=="))
	f.Add(true, []byte("9"))
	f.Add(false, []byte{})
	f.Fuzz(func(t *testing.T, b64 bool, msg []byte) {
		name := ProtocolV5
		if b64 {
			name = ProtocolV4Base64
		}
		p := protocolFor(name)
		fr, err := decodeFrame(p, msg)
		if err != nil {
			return
		}
		again, err := decodeFrame(p, p.encodeFrame(nil, fr.channel, fr.payload))
		if err != nil || again.channel != fr.channel || !bytes.Equal(again.payload, fr.payload) {
			t.Fatalf("re-encoding changed the frame: %v", err)
		}
	})
}

// FuzzParseResize: never panics, and an accepted size is in range.
func FuzzParseResize(f *testing.F) {
	for _, s := range []string{`{"Width":80,"Height":24}`, `{"Width":-1,"Height":2}`, `{"Width":1e3,"Height":2}`, `{`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseResize(b)
		if err == nil && (s.Width == 0 || s.Height == 0) {
			t.Fatalf("accepted a zero size %v from %q", s, b)
		}
	})
}

// FuzzSplitOfferedProtocols: never panics; a bearer entry never leaks into
// the protocols offered for negotiation.
func FuzzSplitOfferedProtocols(f *testing.F) {
	f.Add("v4.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9r")
	f.Add(",,, ,")
	f.Fuzz(func(t *testing.T, header string) {
		protos, _, err := splitOfferedProtocols([]string{header})
		if err != nil {
			return
		}
		for _, p := range protos {
			if len(p) >= len(bearerProtocolPrefix) && p[:len(bearerProtocolPrefix)] == bearerProtocolPrefix {
				t.Fatalf("bearer entry %q left among protocols", p)
			}
		}
	})
}
