package proxy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	osexec "os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// Item 10 with a real third-party client: node's `ws` sends
// `send(a, {fin:false}); ping(); send(b, {fin:true})` as three frames, a
// ping between the fragments of one message, which RFC 6455 allows. The
// message must reach the process whole, the ping must be answered, and the
// session must end with the client's own 1000, never 1002. Cases: a small
// binary message (the report), base64 text frames, and a message larger
// than the proxy's 4 KiB read buffer (fragments split across reads).
func TestNodeWSFragmentedMessageWithPing(t *testing.T) {
	nodePath, err := tools.NodeWS(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, protocol string
		first, second  string
		binary         bool
		want           string // what cat echoes, decoded
		echoed         int    // bytes the client waits for, channel bytes excluded
	}{
		{"small", ProtocolV4, "\x00hel", "lo\n", true, "hello\n", 6},
		{"base64", ProtocolV4Base64, "0aGVs", "bG8K", false, "hello\n", 8},
		{"large", ProtocolV5, "\x00" + strings.Repeat("a", 5000), strings.Repeat("b", 3000), true,
			strings.Repeat("a", 5000) + strings.Repeat("b", 3000), 8000},
	}
	for _, tr := range upstreams {
		for _, tc := range cases {
			t.Run(string(tr)+"/"+tc.name, func(t *testing.T) {
				h := newHarnessVia(t, tr, func(c *Config) { c.PingInterval = 30 * time.Second })
				tok := h.mintWith(func(c *hmac.Claims) { c.Stdin = true }, "cat")
				url := "ws" + strings.TrimPrefix(h.url, "http") + "/api/v1/namespaces/ns/pods/pod/exec"
				bin := "0"
				if tc.binary {
					bin = "1"
				}
				cmd := osexec.CommandContext(t.Context(), "node", "testdata/ws-fragment-ping.js", url, tok, tc.protocol,
					hex.EncodeToString([]byte(tc.first)), hex.EncodeToString([]byte(tc.second)), bin, strconv.Itoa(tc.echoed))
				cmd.Env = append(os.Environ(), "NODE_PATH="+nodePath)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("node: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.Bytes())
				}
				var echo []byte
				var pongs []string
				closeCode := -1
				sc := bufio.NewScanner(bytes.NewReader(out))
				for sc.Scan() {
					var ev struct {
						Event, Hex, Data, Error string
						Code                    int
					}
					if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
						t.Fatalf("node printed %q: %v", sc.Bytes(), err)
					}
					switch ev.Event {
					case "message":
						frame, _ := hex.DecodeString(ev.Hex)
						if len(frame) < 2 || (frame[0] != 1 && frame[0] != '1') {
							t.Fatalf("frame %q, want stdout", frame)
						}
						payload := frame[1:]
						if !tc.binary {
							if payload, err = base64.StdEncoding.DecodeString(string(payload)); err != nil {
								t.Fatalf("frame %q: %v", frame, err)
							}
						}
						echo = append(echo, payload...)
					case "pong":
						pongs = append(pongs, ev.Data)
					case "close":
						closeCode = ev.Code
					default:
						t.Errorf("node: %s", sc.Bytes())
					}
				}
				if string(echo) != tc.want {
					t.Errorf("echo %d bytes %.40q, want the reassembled message's %d bytes", len(echo), echo, len(tc.want))
				}
				if len(pongs) != 1 || pongs[0] != "between" {
					t.Errorf("pongs %q, want the ping between the fragments answered", pongs)
				}
				if closeCode != 1000 {
					t.Errorf("close code %d, want 1000 (the client's own close echoed)", closeCode)
				}
				closed := h.log.wait(t, 10*time.Second, "session closed")
				if closed["reason"] != "client_closed_1000" || closed["close_code"] != float64(1000) {
					t.Errorf("closed line reason %v close_code %v, want client_closed_1000 and 1000", closed["reason"], closed["close_code"])
				}
			})
		}
	}
}
