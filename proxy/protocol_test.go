package proxy

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestNegotiateProtocolPicksNewestOffered(t *testing.T) {
	t.Parallel()
	cases := []struct {
		offered []string
		want    string
		wantErr bool
	}{
		{offered: nil, want: ""},
		{offered: []string{ProtocolV4}, want: ProtocolV4},
		{offered: []string{ProtocolV4, ProtocolV5}, want: ProtocolV5},
		{offered: []string{ProtocolV1, ProtocolV4Base64}, want: ProtocolV4Base64},
		{offered: []string{"v3.channel.k8s.io", ProtocolV1}, want: ProtocolV1},
		{offered: []string{ProtocolV1Base64}, want: ProtocolV1Base64},
		{offered: []string{"chat", "v3.channel.k8s.io"}, wantErr: true},
	}
	for _, c := range cases {
		got, err := negotiateProtocol(c.offered)
		if c.wantErr {
			if !errors.Is(err, errUnsupportedProtocol) {
				t.Errorf("negotiate(%q) err = %v, want errUnsupportedProtocol", c.offered, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("negotiate(%q) = %q, %v; want %q", c.offered, got, err, c.want)
		}
	}
}

func TestSplitOfferedProtocolsExtractsBearer(t *testing.T) {
	t.Parallel()
	// "tok.en" in base64url without padding is "dG9rLmVu".
	protos, bearer, err := splitOfferedProtocols([]string{"v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9rLmVu", "v4.channel.k8s.io"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(protos, ",") != "v5.channel.k8s.io,v4.channel.k8s.io" {
		t.Errorf("protocols = %q", protos)
	}
	if len(bearer) != 1 || bearer[0] != "tok.en" {
		t.Errorf("bearer = %q", bearer)
	}
	if _, _, err := splitOfferedProtocols([]string{"base64url.bearer.authorization.k8s.io.!!!"}); err == nil {
		t.Error("invalid base64url bearer subprotocol accepted")
	}
	if _, _, err := splitOfferedProtocols([]string{"base64url.bearer.authorization.k8s.io."}); err == nil {
		t.Error("empty bearer subprotocol accepted")
	}
}

func TestFrameRoundTrip(t *testing.T) {
	t.Parallel()
	for _, name := range protocolPreference {
		p := protocolFor(name)
		payload := bytes.Repeat([]byte{0, 1, 2, 255, 'x'}, 100)
		wire := p.encodeFrame(nil, chanStdout, payload)
		f, err := decodeFrame(p, wire)
		if err != nil {
			t.Fatalf("%s: decode: %v", name, err)
		}
		if f.channel != chanStdout || !bytes.Equal(f.payload, payload) {
			t.Fatalf("%s: round trip changed the frame", name)
		}
	}
}

func TestMaxPayloadKeepsFramesWithinLimit(t *testing.T) {
	t.Parallel()
	for _, name := range protocolPreference {
		p := protocolFor(name)
		for _, size := range []int{64, 100, 4096, 4097} {
			n := p.maxPayload(size)
			wire := p.encodeFrame(nil, chanStdout, make([]byte, n))
			if len(wire) > size {
				t.Errorf("%s size %d: a full frame is %d bytes", name, size, len(wire))
			}
			wire = p.encodeFrame(nil, chanStdout, make([]byte, n+3))
			if len(wire) <= size {
				t.Errorf("%s size %d: maxPayload %d is not the largest that fits", name, size, n)
			}
		}
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	t.Parallel()
	if _, err := decodeFrame(protocolFor(ProtocolV4), nil); !errors.Is(err, errEmptyFrame) {
		t.Errorf("empty v4 frame: %v", err)
	}
	b64 := protocolFor(ProtocolV4Base64)
	if _, err := decodeFrame(b64, []byte("x4AAA")); !errors.Is(err, errBadChannelCh) {
		t.Errorf("bad channel digit: %v", err)
	}
	if _, err := decodeFrame(b64, []byte("0%%%")); !errors.Is(err, errBadBase64) {
		t.Errorf("bad base64: %v", err)
	}
}

func TestParseResize(t *testing.T) {
	t.Parallel()
	good := map[string]TerminalSize{
		`{"Width":80,"Height":24}`:   {Width: 80, Height: 24},
		`{"Width":65535,"Height":1}`: {Width: 65535, Height: 1},
		` {"Height":5, "Width":7} `:  {Width: 7, Height: 5},
		`{"width":10,"height":11}`:   {Width: 10, Height: 11}, // encoding/json matches case-insensitively, as the kubelet does
	}
	for in, want := range good {
		got, err := parseResize([]byte(in))
		if err != nil || got != want {
			t.Errorf("parseResize(%s) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{``, `{}`, `{"Width":80}`, `{"Width":-1,"Height":24}`, `{"Width":0,"Height":24}`,
		`{"Width":65536,"Height":24}`, `{"Width":1e10,"Height":2}`, `{"Width":80.5,"Height":24}`, `[1,2]`,
		`{"Width":80,"Height":24}{"Width":1,"Height":1}`, `{"Width":"80","Height":"24"}`, `{"Width":80,"Height":24`} {
		if _, err := parseResize([]byte(in)); err == nil {
			t.Errorf("parseResize(%s) accepted", in)
		}
	}
}

func TestSizeQueueKeepsLatestAndEarly(t *testing.T) {
	t.Parallel()
	q := newSizeQueue()
	// Sizes set before anyone calls Next are kept: the initial size.
	q.Set(TerminalSize{Width: 81, Height: 25})
	q.Set(TerminalSize{Width: 80, Height: 24})
	if s := q.Next(); s == nil || s.Width != 80 || s.Height != 24 {
		t.Fatalf("Next = %v, want the latest pending size 80x24", s)
	}
	got := make(chan uint16)
	go func() {
		s := q.Next()
		if s == nil {
			got <- 0
			return
		}
		got <- s.Width
	}()
	q.Set(TerminalSize{Width: 100, Height: 30})
	if w := <-got; w != 100 {
		t.Fatalf("blocked Next got width %d, want 100", w)
	}
	go func() {
		if s := q.Next(); s != nil {
			got <- s.Width
			return
		}
		got <- 0
	}()
	q.Close()
	if w := <-got; w != 0 {
		t.Fatalf("Next after Close returned a size %d", w)
	}
}
