package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac/hmactest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
)

// runTokenCmd runs "token args..." with stdin and returns the exit status,
// stdout and stderr.
func runTokenCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := tokenMain(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// keyDir writes a Secret-volume key directory and returns it and the key
// file path inside it.
func keyDir(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	filewatchtest.WriteSecretDir(t, dir, map[string][]byte{"key": append(hmactest.NewKey(t), '\n')})
	return dir, filepath.Join(dir, "key")
}

func TestTokenMintVerifyInspect(t *testing.T) {
	dir, keyFile := keyDir(t)
	code, out, errOut := runTokenCmd(t, "", "mint", "--key-file", keyFile, "--namespace", "team-a", "--pod", "web-0",
		"--container", "app", "--command", "/bin/sh", "--command", "-c", "--command", "echo hi there",
		"--tty", "--stdin", "--node", "node-1", "--sub", "alice", "--ttl", "2m")
	if code != 0 {
		t.Fatalf("mint: %d %s", code, errOut)
	}
	tok := strings.TrimSpace(out)

	code, out, errOut = runTokenCmd(t, "", "verify", "--key-dir", dir, tok)
	if code != 0 {
		t.Fatalf("verify: %d %s", code, errOut)
	}
	var c hmac.Claims
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("verify output %q: %v", out, err)
	}
	if c.Namespace != "team-a" || c.Pod != "web-0" || c.Container != "app" || c.Node != "node-1" || c.Subject != "alice" ||
		!c.TTY || !c.Stdin || strings.Join(c.Command, "|") != "/bin/sh|-c|echo hi there" {
		t.Errorf("claims %+v", c)
	}
	if ttl := c.ExpiresAt.Sub(c.IssuedAt.Time); ttl != 2*time.Minute {
		t.Errorf("ttl %s", ttl)
	}
	if len(c.ID) != 22 || len(c.SID) != 22 {
		t.Errorf("default jti %q / sid %q are not 128-bit random ids", c.ID, c.SID)
	}

	// From stdin, and again: the CLI has its own empty replay memory.
	if code, _, errOut := runTokenCmd(t, tok+"\n", "verify", "--key-dir", dir, "-"); code != 0 {
		t.Fatalf("verify from stdin: %s", errOut)
	}

	code, out, errOut = runTokenCmd(t, tok, "inspect")
	if code != 0 || !strings.Contains(out, "UNVERIFIED") || !strings.Contains(errOut, "UNVERIFIED") {
		t.Fatalf("inspect: %d\n%s\n%s", code, out, errOut)
	}
	var shown struct {
		Header map[string]any `json:"header"`
		Claims map[string]any `json:"claims"`
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatal(err)
	}
	if shown.Header["alg"] != "HS256" || shown.Claims["pod"] != "web-0" {
		t.Errorf("inspect shows %+v", shown)
	}
}

// --resumable and --resume reach the claims the proxy's resume reads.
func TestTokenMintResumeClaims(t *testing.T) {
	dir, keyFile := keyDir(t)
	for _, c := range []struct {
		args      []string
		resumable bool
		resume    string
	}{
		{nil, false, ""},
		{[]string{"--resumable", "--sid", "s1"}, true, ""},
		{[]string{"--resume", "s1"}, false, "s1"},
	} {
		code, out, errOut := runTokenCmd(t, "", append([]string{"mint", "--key-file", keyFile, "--namespace", "ns", "--pod", "p"}, c.args...)...)
		if code != 0 {
			t.Fatalf("mint %q: %d %s", c.args, code, errOut)
		}
		code, out, errOut = runTokenCmd(t, "", "verify", "--key-dir", dir, strings.TrimSpace(out))
		var got hmac.Claims
		if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil {
			t.Fatalf("verify %q: %d %v %s", c.args, code, err, errOut)
		}
		if got.Resumable != c.resumable || got.Resume != c.resume {
			t.Errorf("mint %q: resumable %v resume %q", c.args, got.Resumable, got.Resume)
		}
	}
}

func TestTokenVerifyRefuses(t *testing.T) {
	dir, keyFile := keyDir(t)
	_, out, _ := runTokenCmd(t, "", "mint", "--key-file", keyFile, "--namespace", "n", "--pod", "p")
	tok := strings.TrimSpace(out)
	otherDir, _ := keyDir(t)

	for name, tc := range map[string]struct {
		dir, token, reason string
	}{
		"tampered":      {dir, tok[:len(tok)-2] + "AA", "bad_signature"},
		"other key":     {otherDir, tok, "unknown_key"},
		"no key dir":    {filepath.Join(dir, "missing"), tok, "unknown_key"},
		"not a token":   {dir, "hello", "malformed"},
		"wrong padding": {dir, tok + "=", "malformed"},
	} {
		code, out, errOut := runTokenCmd(t, "", "verify", "--key-dir", tc.dir, tc.token)
		if code != 1 || out != "" || !strings.Contains(errOut, "INVALID: "+tc.reason) {
			t.Errorf("%s: code %d stdout %q stderr %q", name, code, out, errOut)
		}
	}
	if code, _, errOut := runTokenCmd(t, "", "verify", "--key-dir", dir, "--audience", "other", tok); code != 1 || !strings.Contains(errOut, "wrong_audience") {
		t.Errorf("audience: %d %s", code, errOut)
	}
}

// docs/guacd.md promises this realistic worst case fits guacd's limit.
func TestTokenMintForGuacdWorstCaseFits(t *testing.T) {
	_, keyFile := keyDir(t)
	code, out, errOut := runTokenCmd(t, "", "mint", "--key-file", keyFile, "--for-guacd",
		"--namespace", strings.Repeat("n", 30), "--pod", strings.Repeat("p", 63), "--container", strings.Repeat("c", 30),
		"--node", strings.Repeat("x", 60), "--command", "/bin/bash", "--command", "--login", "--command", "-i",
		"--tty", "--stdin", "--ttl", "5m")
	if code != 0 {
		t.Fatalf("worst case refused: %s", errOut)
	}
	tok := strings.TrimSpace(out)
	// Measured independently of the CLI's own message.
	n := guacdRequestLen(strings.Repeat("n", 30), tok, strings.Repeat("c", 30), "/bin/bash --login -i", guacdDefaultTerminalType)
	if n >= guacdMaxRequest {
		t.Fatalf("request line %d bytes", n)
	}
	m := regexp.MustCompile(`guacd request line: (\d+) of`).FindStringSubmatch(errOut)
	if m == nil || m[1] != strconv.Itoa(n) {
		t.Errorf("CLI reports %q, computed %d", errOut, n)
	}
	t.Logf("worst case: token %d chars, guacd request line %d of %d bytes", len(tok), n, guacdMaxRequest-1)
}

func TestTokenMintForGuacdRefusesTooLong(t *testing.T) {
	_, keyFile := keyDir(t)
	long := strings.TrimSpace(strings.Repeat("word ", 60)) // single spaces: guacd 1.6.1 can send it
	code, out, errOut := runTokenCmd(t, "", "mint", "--key-file", keyFile, "--for-guacd",
		"--namespace", "n", "--pod", "p", "--command", "sh", "--command", "-c", "--command", long)
	if code != 1 || out != "" || !strings.Contains(errOut, "guacd accepts at most 1023") {
		t.Errorf("code %d stdout %q stderr %q", code, out, errOut)
	}
	// Without --for-guacd the same token is minted.
	if code, _, errOut := runTokenCmd(t, "", "mint", "--key-file", keyFile, "--namespace", "n", "--pod", "p", "--command", long); code != 0 {
		t.Errorf("without --for-guacd: %s", errOut)
	}
}

func TestTokenMintRefuses(t *testing.T) {
	_, keyFile := keyDir(t)
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("too-short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"no key file":  {"--namespace", "n", "--pod", "p"},
		"missing file": {"--key-file", keyFile + ".nope", "--namespace", "n", "--pod", "p"},
		"short key":    {"--key-file", short, "--namespace", "n", "--pod", "p"},
		"no namespace": {"--key-file", keyFile, "--pod", "p"},
		"no pod":       {"--key-file", keyFile, "--namespace", "n"},
		"ttl over max": {"--key-file", keyFile, "--namespace", "n", "--pod", "p", "--ttl", "5m1s"},
		"zero ttl":     {"--key-file", keyFile, "--namespace", "n", "--pod", "p", "--ttl", "0s"},
	} {
		code, out, errOut := runTokenCmd(t, "", append([]string{"mint"}, args...)...)
		if code != 1 || out != "" || errOut == "" {
			t.Errorf("%s: code %d stdout %q stderr %q", name, code, out, errOut)
		}
		if strings.Contains(errOut, "too-short") {
			t.Errorf("%s: key bytes in the error", name)
		}
	}
	if code, _, _ := runTokenCmd(t, "", "mint", "--key-file", keyFile, "--namespace", "n", "--pod", "p", "extra"); code != 2 {
		t.Error("stray argument accepted")
	}
}

func TestTokenHelpAndUsage(t *testing.T) {
	for verb, flagName := range map[string]string{"mint": "-for-guacd", "verify": "-key-dir", "inspect": "UNVERIFIED"} {
		for _, h := range []string{"--help", "-h"} {
			code, out, errOut := runTokenCmd(t, "", verb, h)
			if code != 0 || !strings.Contains(out, "usage: k8s-ws-proxy token "+verb) || !strings.Contains(out, flagName) || errOut != "" {
				t.Errorf("%s %s: code %d stdout %q stderr %q", verb, h, code, out, errOut)
			}
		}
	}
	if code, out, _ := runTokenCmd(t, "", "--help"); code != 0 || !strings.Contains(out, "mint") {
		t.Errorf("token --help: %d %q", code, out)
	}
	if code, _, errOut := runTokenCmd(t, ""); code != 2 || !strings.Contains(errOut, "usage") {
		t.Errorf("no verb: %d %q", code, errOut)
	}
	if code, _, _ := runTokenCmd(t, "", "frobnicate"); code != 2 {
		t.Error("unknown verb accepted")
	}
	if code, _, errOut := runTokenCmd(t, "", "mint", "--no-such-flag"); code != 2 || !strings.Contains(errOut, "no-such-flag") {
		t.Errorf("bad flag: %d %q", code, errOut)
	}
	if code, _, errOut := runTokenCmd(t, "", "inspect"); code != 1 || !strings.Contains(errOut, "no token") {
		t.Errorf("inspect without token: %d %q", code, errOut)
	}
}
