package testenv

import (
	"fmt"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

// Target is the container a session token grants, on its node.
type Target struct {
	Namespace, Pod, Container, Node string
}

// Claims returns a valid claim set for at, issued now for a minute, with a
// fresh ID; an empty command means attach. Tests tweak it before minting.
func Claims(at Target, command ...string) hmac.Claims {
	now := time.Now()
	return hmac.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Audience:  jwt.ClaimStrings{hmac.DefaultAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)),
			ID:        hmac.NewID(),
			Subject:   "alice@example.com",
		},
		Namespace: at.Namespace, Pod: at.Pod, Container: at.Container,
		Command: command, Node: at.Node,
	}
}

// Mint signs c, failing tb if it cannot.
func Mint(tb testing.TB, s *hmac.Signer, c hmac.Claims) string {
	tb.Helper()
	tok, err := s.Sign(c)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// ExecURL is the API-server-shaped URL at addr for the session c grants,
// as kubectl builds it (the token then travels as the bearer token):
// exec, or attach when c has no command.
func ExecURL(addr string, c hmac.Claims, stderr bool) string {
	verb := "exec"
	if len(c.Command) == 0 {
		verb = "attach"
	}
	q := url.Values{}
	for _, a := range c.Command {
		q.Add("command", a)
	}
	q.Set("container", c.Container)
	q.Set("stdin", strconv.FormatBool(c.Stdin))
	q.Set("stdout", "true")
	q.Set("stderr", strconv.FormatBool(stderr))
	q.Set("tty", strconv.FormatBool(c.TTY))
	return fmt.Sprintf("http://%s/api/v1/namespaces/%s/pods/%s/%s?%s", addr, c.Namespace, c.Pod, verb, q.Encode())
}
