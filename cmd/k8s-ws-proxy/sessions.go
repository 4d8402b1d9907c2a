package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// sessionsMain is `k8s-ws-proxy sessions list|revoke` against a proxy's
// --admin-listen: it mints a one-minute admin token with the one scope the
// call needs from --key-file (any key of the proxy's Secret).
func sessionsMain(args []string, stdout, stderr io.Writer) int {
	const synopsis = "sessions list|revoke --admin-url URL --key-file FILE [--sub SUBJECT] [SID]"
	if len(args) == 0 || (args[0] != "list" && args[0] != "revoke") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintf(stdout, "usage: k8s-ws-proxy %s\n", synopsis)
			return 0
		}
		fmt.Fprintf(stderr, "usage: k8s-ws-proxy %s\n", synopsis)
		return 2
	}
	verb := args[0]
	fs := newCommand("sessions "+verb, map[string]string{
		"list":   "--admin-url URL --key-file FILE [--sub SUBJECT]",
		"revoke": "--admin-url URL --key-file FILE (SID | --sub SUBJECT)",
	}[verb], "")
	adminURL := fs.String("admin-url", "http://127.0.0.1:9091", "the proxy's admin API (its --admin-listen)")
	keyFile := fs.String("key-file", "", "file holding one of the proxy's HMAC keys; required")
	sub := fs.String("sub", "", "list: only this subject's sessions; revoke: every session of this subject")
	subject := fs.String("as", "k8s-ws-proxy-cli", "sub claim of the admin token (logged by the proxy)")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit of the call")
	if code, stop := fs.parse(args[1:], stdout, stderr); stop {
		return code
	}
	if *keyFile == "" {
		return tokenFail(stderr, "sessions %s: --key-file is required", verb)
	}
	method, path, scope := http.MethodGet, "/sessions", hmac.ScopeSessionsList
	q := url.Values{}
	switch {
	case verb == "list" && fs.NArg() == 0:
		if *sub != "" {
			q.Set("sub", *sub)
		}
	case verb == "revoke" && fs.NArg() == 1 && *sub == "":
		method, path, scope = http.MethodDelete, "/sessions/"+url.PathEscape(fs.Arg(0)), hmac.ScopeSessionsRevoke
	case verb == "revoke" && fs.NArg() == 0 && *sub != "":
		method, scope = http.MethodDelete, hmac.ScopeSessionsRevoke
		q.Set("sub", *sub)
	default:
		return tokenFail(stderr, "sessions %s: give a SID or --sub (list takes no SID, revoke exactly one of them)", verb)
	}
	key, err := hmac.LoadKeyFile(*keyFile)
	if err != nil {
		return tokenFail(stderr, "sessions %s: %v", verb, err)
	}
	signer, err := hmac.NewSigner(key)
	if err != nil {
		return tokenFail(stderr, "sessions %s: %v", verb, err)
	}
	tok, err := signer.SignAdmin(hmac.AdminClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: *subject}, Scope: scope})
	if err != nil {
		return tokenFail(stderr, "sessions %s: %v", verb, err)
	}
	u := strings.TrimSuffix(*adminURL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return tokenFail(stderr, "sessions %s: %v", verb, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := (&http.Client{Timeout: *timeout}).Do(req)
	if err != nil {
		return tokenFail(stderr, "sessions %s: %v", verb, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode != http.StatusOK {
		var st metav1.Status
		if json.Unmarshal(body, &st) == nil && st.Message != "" {
			return tokenFail(stderr, "sessions %s: %d %s: %s", verb, resp.StatusCode, st.Reason, st.Message)
		}
		return tokenFail(stderr, "sessions %s: HTTP %d", verb, resp.StatusCode)
	}
	var out bytes.Buffer
	if json.Indent(&out, body, "", "  ") != nil {
		return tokenFail(stderr, "sessions %s: the answer is not JSON", verb)
	}
	fmt.Fprintln(stdout, out.String())
	return 0
}
