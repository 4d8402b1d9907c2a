package main

import (
	"strings"
	"testing"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// TestTokenMintForGuacdTTYAndStdin: guacd always sends stdin=true and
// tty=true, so --for-guacd mints a token with both, and refuses to mint
// one without either (guacd could never use it).
func TestTokenMintForGuacdTTYAndStdin(t *testing.T) {
	_, keyFile := keyDir(t)
	base := []string{"mint", "--key-file", keyFile, "--for-guacd", "--namespace", "team-a", "--pod", "web-0", "--command", "sh"}
	code, out, errOut := runTokenCmd(t, "", base...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	_, claims, err := hmac.Inspect(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(claims), `"tty":true`) || !strings.Contains(string(claims), `"stdin":true`) {
		t.Fatalf("a --for-guacd token without tty and stdin: %s", claims)
	}
	for _, off := range [][]string{{"--tty=false"}, {"--stdin=false"}, {"--tty=false", "--stdin=false"}} {
		code, out, errOut := runTokenCmd(t, "", append(append([]string{}, base...), off...)...)
		if code == 0 || out != "" || !strings.Contains(errOut, "guacd always sends") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", off, code, out, errOut)
		}
	}
}

// TestTokenMintForGuacdCommandWords: guacd 1.6.1 splits exec-command at
// whitespace and replaces $TERM, so a command that cannot survive that is
// refused.
func TestTokenMintForGuacdCommandWords(t *testing.T) {
	_, keyFile := keyDir(t)
	base := []string{"mint", "--key-file", keyFile, "--for-guacd", "--namespace", "team-a", "--pod", "web-0"}
	for _, cmd := range [][]string{{"sh", "-c", "echo  two-spaces"}, {"sh", "-c", "tab\there"}, {"env", "TERM=$TERM", "sh"}, {"sh", ""}, {"sh", " lead"}} {
		args := append([]string{}, base...)
		for _, a := range cmd {
			args = append(args, "--command", a)
		}
		if code, out, errOut := runTokenCmd(t, "", args...); code == 0 || out != "" {
			t.Errorf("%q: exit %d, stderr %q", cmd, code, errOut)
		}
	}
	// One space inside an argument is fine: the proxy compares the words
	// joined by single spaces.
	if code, _, errOut := runTokenCmd(t, "", append(base, "--command", "sh", "--command", "-c", "--command", "ls -l", "--command", "env TERM=xterm")...); code != 0 {
		t.Errorf("single spaces refused: %s", errOut)
	}
}
