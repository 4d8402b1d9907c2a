package proxy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	streamproto "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// Channel numbers of the Kubernetes channel protocols.
const (
	chanStdin  byte = streamproto.StreamStdIn
	chanStdout byte = streamproto.StreamStdOut
	chanStderr byte = streamproto.StreamStdErr
	chanError  byte = streamproto.StreamErr
	chanResize byte = streamproto.StreamResize
	chanClose  byte = streamproto.StreamClose // v5 only: payload is the channel being half-closed
)

// Subprotocol names, from apimachinery and k8s.io/streaming. The base64
// v4 name has no upstream constant: the kubelet spells it the same way,
// "v4." before the base64 protocol. Nor has the bearer prefix (the API
// server's websocket authenticator keeps it unexported).
const (
	ProtocolV5           = streamproto.StreamProtocolV5Name
	ProtocolV4           = streamproto.StreamProtocolV4Name
	ProtocolV4Base64     = "v4." + wsstream.Base64ChannelWebSocketProtocol
	ProtocolV1           = wsstream.ChannelWebSocketProtocol
	ProtocolV1Base64     = wsstream.Base64ChannelWebSocketProtocol
	bearerProtocolPrefix = "base64url.bearer.authorization.k8s.io."
)

// protocolPreference lists what we speak, newest first: the server picks the
// first entry of this list that the client offered, whatever the client's
// order, so an old client offering v4 before v5 still gets v5.
var protocolPreference = []string{ProtocolV5, ProtocolV4, ProtocolV4Base64, ProtocolV1, ProtocolV1Base64}

// wireProtocol is what a negotiated subprotocol means for framing.
type wireProtocol struct {
	name string
	// base64 protocols send text frames whose first byte is the ASCII digit
	// of the channel and whose rest is the standard base64 of the payload.
	base64 bool
	// statusJSON: channel 3 carries a metav1.Status (v4 and v5); older
	// protocols carry the bare error text and nothing on success.
	statusJSON bool
	// streamClose: channel 255 half-closes a stream (v5).
	streamClose bool
}

func protocolFor(name string) wireProtocol {
	p := wireProtocol{name: name}
	switch name {
	case ProtocolV5:
		p.statusJSON, p.streamClose = true, true
	case ProtocolV4:
		p.statusJSON = true
	case ProtocolV4Base64:
		p.statusJSON, p.base64 = true, true
	case ProtocolV1Base64:
		p.base64 = true
	}
	return p
}

// errUnsupportedProtocol is returned when a client offers subprotocols and
// none of them is one we speak.
var errUnsupportedProtocol = errors.New("none of the offered WebSocket subprotocols is supported")

// Bounds on how much of a client's offer a message repeats.
const (
	maxEchoedProtocols   = 8
	maxEchoedProtocolLen = 64
)

// redactProtocols is the offer as a message may repeat it: any entry that
// starts with the bearer prefix in any case (a mis-cased one is not read as
// a token, but it still carries one) loses everything after the prefix,
// and the list and its entries are cut to a few bytes of a client's input.
func redactProtocols(offered []string) []string {
	out := make([]string, 0, min(len(offered), maxEchoedProtocols+1))
	for i, p := range offered {
		if i == maxEchoedProtocols {
			out = append(out, fmt.Sprintf("... %d more", len(offered)-i))
			break
		}
		if hasBearerPrefix(p) {
			p = p[:len(bearerProtocolPrefix)] + "<redacted>"
		} else if len(p) > maxEchoedProtocolLen {
			p = p[:maxEchoedProtocolLen] + "..."
		}
		out = append(out, p)
	}
	return out
}

// hasBearerPrefix reports whether p starts with the bearer subprotocol's
// prefix, ignoring case.
func hasBearerPrefix(p string) bool {
	return len(p) >= len(bearerProtocolPrefix) && strings.EqualFold(p[:len(bearerProtocolPrefix)], bearerProtocolPrefix)
}

// frame is one decoded inbound message.
type frame struct {
	channel byte
	payload []byte
}

var (
	errEmptyFrame   = errors.New("empty frame")
	errBadBase64    = errors.New("frame payload is not valid base64")
	errBadChannelCh = errors.New("base64 frame does not start with a channel digit")
)

// decodeFrame turns one WebSocket message into a channel and payload. Binary
// protocols put the channel in byte 0; base64 protocols put it as an ASCII
// digit followed by base64 text.
func decodeFrame(p wireProtocol, msg []byte) (frame, error) {
	if len(msg) == 0 {
		return frame{}, errEmptyFrame
	}
	if !p.base64 {
		return frame{channel: msg[0], payload: msg[1:]}, nil
	}
	c := msg[0]
	if c < '0' || c > '9' {
		return frame{}, errBadChannelCh
	}
	payload, err := base64.StdEncoding.DecodeString(string(msg[1:]))
	if err != nil {
		return frame{}, errBadBase64
	}
	return frame{channel: c - '0', payload: payload}, nil
}

// maxPayload is how many payload bytes fit in one outbound frame of at most
// frameSize bytes, channel byte included.
func (p wireProtocol) maxPayload(frameSize int) int {
	if p.base64 {
		return (frameSize - 1) / 4 * 3
	}
	return frameSize - 1
}

// encodeFrame appends the wire form of one frame to dst.
func (p wireProtocol) encodeFrame(dst []byte, channel byte, payload []byte) []byte {
	if !p.base64 {
		dst = append(dst, channel)
		return append(dst, payload...)
	}
	dst = append(dst, '0'+channel)
	return base64.StdEncoding.AppendEncode(dst, payload)
}

// TerminalSize is a terminal's size in character cells, as client-go
// passes it to the exec.
type TerminalSize = remotecommand.TerminalSize

var errBadResize = errors.New("resize message must be {\"Width\":1..65535,\"Height\":1..65535}")

// parseResize decodes a channel 4 message. Sizes outside 1..65535 are
// refused rather than clamped: a client sending them is broken, and a
// terminal of 0 rows or 70,000 columns helps nobody.
func parseResize(b []byte) (TerminalSize, error) {
	var raw struct {
		Width  *int64
		Height *int64
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil || raw.Width == nil || raw.Height == nil {
		return TerminalSize{}, errBadResize
	}
	if dec.More() {
		return TerminalSize{}, errBadResize
	}
	w, h := *raw.Width, *raw.Height
	if w < 1 || h < 1 || w > 65535 || h > 65535 {
		return TerminalSize{}, errBadResize
	}
	return TerminalSize{Width: uint16(w), Height: uint16(h)}, nil
}
