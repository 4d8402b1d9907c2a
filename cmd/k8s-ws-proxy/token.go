package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
)

const tokenUsage = `usage: k8s-ws-proxy token <mint|verify|inspect> [flags]

  mint     sign a session token with a key file and print it
  verify   check a token against a key directory (a mounted Secret)
  inspect  decode a token WITHOUT checking it, for debugging

Run "k8s-ws-proxy token <verb> --help" for the flags of each.
The token format is described in docs/tokens.md.
`

// tokenMain is "k8s-ws-proxy token mint|verify|inspect".
func tokenMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return 2
	}
	switch args[0] {
	case "mint":
		return tokenMint(args[1:], stdout, stderr)
	case "verify":
		return tokenVerify(args[1:], stdin, stdout, stderr)
	case "inspect":
		return tokenInspect(args[1:], stdin, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, tokenUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "k8s-ws-proxy token: unknown verb %q\n\n%s", args[0], tokenUsage)
		return 2
	}
}

// tokenArgList is a repeatable string flag.
type tokenArgList []string

func (l *tokenArgList) String() string     { return strings.Join(*l, " ") }
func (l *tokenArgList) Set(v string) error { *l = append(*l, v); return nil }

func tokenMint(args []string, stdout, stderr io.Writer) int {
	fs := newCommand("token mint", "--key-file FILE --namespace NS --pod POD [flags]", "")
	var (
		keyFile, namespace, pod, container, node, sub, sid, jti, audience, termType, resume string
		command                                                                             tokenArgList
		tty, stdin, forGuacd, resumable                                                     bool
		ttl                                                                                 time.Duration
	)
	fs.StringVar(&keyFile, "key-file", "", "file holding the HMAC key (trailing whitespace is ignored); this or --key-dir is required")
	keyDir, propagation := tokenKeyDirFlags(fs.FlagSet)
	fs.StringVar(&namespace, "namespace", "", "the pod's namespace; required")
	fs.StringVar(&pod, "pod", "", "the pod's name; required")
	fs.StringVar(&container, "container", "", "container name (default: the pod's default container)")
	fs.Var(&command, "command", "one argv element of the command to exec; repeat for each (none = attach)")
	fs.BoolVar(&tty, "tty", false, "allocate a TTY")
	fs.BoolVar(&stdin, "stdin", false, "attach stdin")
	fs.StringVar(&node, "node", "", "the only node whose proxy may accept the token (recommended)")
	fs.DurationVar(&ttl, "ttl", time.Minute, "lifetime, at most "+hmac.DefaultMaxTTL.String())
	fs.StringVar(&sub, "sub", "", "who the session is for (audit)")
	fs.StringVar(&sid, "sid", "", "session id for audit (default: random)")
	fs.StringVar(&jti, "jti", "", "unique token id (default: random, 128 bits)")
	fs.StringVar(&audience, "audience", hmac.DefaultAudience, "aud claim; must match the proxy's --audience")
	fs.BoolVar(&resumable, "resumable", false, "the session survives a dropped connection for the proxy's --resume-window (docs/wire-protocol.md#resume)")
	fs.StringVar(&resume, "resume", "", "a resume token: the sid of the dropped resumable session to continue (same sub and target)")
	fs.BoolVar(&forGuacd, "for-guacd", false, "a token guacd can use: tty and stdin set (guacd always sends both), a command that survives guacd 1.6.1's word splitting, and a request line under guacd's 1024 bytes (the token is guacd's pod parameter)")
	fs.StringVar(&termType, "guacd-terminal-type", guacdDefaultTerminalType, "guacd's terminal-type, which its main branch substitutes for $TERM in the command (with --for-guacd)")
	if code, stop := fs.parse(args, stdout, stderr); stop {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "token mint: unexpected argument %q (use --command once per argv element)\n", fs.Arg(0))
		return 2
	}
	if code, ok := tokenPickKey(&keyFile, *keyDir, *propagation, stderr); !ok {
		return code
	}
	switch {
	case keyFile == "":
		return tokenFail(stderr, "token mint: --key-file or --key-dir is required")
	case namespace == "" || pod == "":
		return tokenFail(stderr, "token mint: --namespace and --pod are required")
	case ttl <= 0 || ttl > hmac.DefaultMaxTTL:
		return tokenFail(stderr, "token mint: --ttl must be above 0 and at most %s (the proxy's default max TTL)", hmac.DefaultMaxTTL)
	}
	if forGuacd {
		explicit := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
		var err error
		if tty, stdin, err = guacdStreams(tty, explicit["tty"], stdin, explicit["stdin"]); err != nil {
			return tokenFail(stderr, "token mint: %v", err)
		}
		if err := guacdCheckCommand(command); err != nil {
			return tokenFail(stderr, "token mint: %v", err)
		}
	}
	key, err := hmac.LoadKeyFile(keyFile)
	if err != nil {
		return tokenFail(stderr, "token mint: %v", err)
	}
	signer, err := hmac.NewSigner(key)
	if err != nil {
		return tokenFail(stderr, "token mint: %v", err)
	}
	if sid == "" {
		sid = hmac.NewID()
	}
	if jti == "" {
		jti = hmac.NewID()
	}
	now := time.Now()
	c := hmac.Claims{
		SID: sid, Namespace: namespace, Pod: pod, Container: container,
		Command: command, TTY: tty, Stdin: stdin, Node: node,
		Resumable: resumable, Resume: resume,
	}
	c.Audience = jwt.ClaimStrings{audience}
	c.Subject = sub
	c.ID = jti
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	tok, err := signer.Sign(c)
	if err != nil {
		return tokenFail(stderr, "token mint: %v", err)
	}
	if forGuacd {
		// guacd's exec-command is one string; the control plane passes the
		// argv joined with spaces (see docs/guacd.md).
		n := guacdRequestLen(namespace, tok, container, strings.Join(command, " "), termType)
		if n >= guacdMaxRequest {
			return tokenFail(stderr, "token mint: guacd's request line would be %d bytes, guacd accepts at most %d: "+
				"shorten the claims (sub, sid, jti, node, command, container) or do not use guacd", n, guacdMaxRequest-1)
		}
		fmt.Fprintf(stderr, "guacd request line: %d of at most %d bytes\n", n, guacdMaxRequest-1)
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

func tokenVerify(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newCommand("token verify", "--key-dir DIR [flags] [TOKEN | -]", "")
	var (
		keyDir, audience string
		maxTTL, leeway   time.Duration
	)
	fs.StringVar(&keyDir, "key-dir", "", "directory of keys, read exactly as the proxy reads its mounted Secret; required")
	fs.StringVar(&audience, "audience", hmac.DefaultAudience, "required aud claim")
	fs.DurationVar(&maxTTL, "max-ttl", hmac.DefaultMaxTTL, "longest accepted lifetime (exp - iat)")
	fs.DurationVar(&leeway, "leeway", hmac.DefaultLeeway, "clock-skew leeway")
	if code, stop := fs.parse(args, stdout, stderr); stop {
		return code
	}
	if keyDir == "" {
		return tokenFail(stderr, "token verify: --key-dir is required")
	}
	tok, err := tokenReadArg(fs.FlagSet, stdin)
	if err != nil {
		return tokenFail(stderr, "token verify: %v", err)
	}
	// Problems with the keys (short, unreadable, no directory) are worth
	// showing; the routine "keys loaded" line is not.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	keys, err := hmac.NewKeyring(hmac.KeyringOptions{Dir: keyDir, Grace: maxTTL + leeway, Logger: log})
	if err != nil {
		return tokenFail(stderr, "token verify: %v", err)
	}
	v, err := hmac.NewVerifier(hmac.VerifierOptions{Keys: keys, Audience: audience, MaxTTL: maxTTL, Leeway: leeway})
	if err != nil {
		return tokenFail(stderr, "token verify: %v", err)
	}
	c, err := v.Verify(tok)
	if err != nil {
		fmt.Fprintf(stderr, "INVALID: %s\n%v\n", hmac.ReasonOf(err), err)
		return 1
	}
	b, err := c.MarshalJSON()
	if err != nil {
		return tokenFail(stderr, "token verify: %v", err)
	}
	var out bytes.Buffer
	_ = json.Indent(&out, b, "", "  ")
	fmt.Fprintln(stdout, out.String())
	return 0
}

func tokenInspect(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newCommand("token inspect", "[TOKEN | -]", "Prints the header and claims marked UNVERIFIED: nothing is checked, not\nthe signature, not the expiry. For debugging only.")
	if code, stop := fs.parse(args, stdout, stderr); stop {
		return code
	}
	tok, err := tokenReadArg(fs.FlagSet, stdin)
	if err != nil {
		return tokenFail(stderr, "token inspect: %v", err)
	}
	header, claims, err := hmac.Inspect(tok)
	if err != nil {
		return tokenFail(stderr, "token inspect: %v", err)
	}
	out, err := json.MarshalIndent(struct {
		Warning string          `json:"warning"`
		Header  json.RawMessage `json:"header"`
		Claims  json.RawMessage `json:"claims"`
	}{"UNVERIFIED: signature, expiry and audience were not checked", header, claims}, "", "  ")
	if err != nil {
		return tokenFail(stderr, "token inspect: %v", err)
	}
	fmt.Fprintln(stderr, "UNVERIFIED: decoded without checking the signature; do not trust these claims")
	fmt.Fprintln(stdout, string(out))
	return 0
}

// tokenReadArg returns the token given as the only argument, or read from
// stdin when the argument is "-" or absent (so it stays out of shell
// history and ps).
func tokenReadArg(fs *flag.FlagSet, stdin io.Reader) (string, error) {
	switch {
	case fs.NArg() > 1:
		return "", errors.New("expected one token")
	case fs.NArg() == 1 && fs.Arg(0) != "-":
		return strings.TrimSpace(fs.Arg(0)), nil
	}
	b, err := io.ReadAll(io.LimitReader(stdin, hmac.MaxTokenLen+2))
	if err != nil {
		return "", fmt.Errorf("reading the token from stdin: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("no token given (argument or stdin)")
	}
	return tok, nil
}

func tokenFail(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, format+"\n", args...)
	return 1
}
