package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch"
)

// Revocations are the subjects and token ids refused from now on.
type Revocations struct {
	Subjects map[string]bool
	TokenIDs map[string]bool
}

func (rv Revocations) match(c *hmac.Claims) bool {
	return rv.Subjects[c.Subject] || rv.TokenIDs[c.ID]
}

// fingerprint is equal for equal revocation sets ("" for none).
func (rv Revocations) fingerprint() string {
	if len(rv.Subjects)+len(rv.TokenIDs) == 0 {
		return ""
	}
	var lines []string
	for s := range rv.Subjects {
		lines = append(lines, "sub:"+s)
	}
	for j := range rv.TokenIDs {
		lines = append(lines, "jti:"+j)
	}
	slices.Sort(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:])
}

// maxRevocationsFile and maxRevocationLine bound what is read: a ConfigMap
// holds at most 1 MiB.
const (
	maxRevocationsFile = 1 << 20
	maxRevocationLine  = 1024
)

// ParseRevocations reads a revocations file: one "sub:<subject>" or
// "jti:<token id>" a line; blank lines and lines starting with # are
// ignored. Lines that are neither are left out and reported, by line number
// only (a line may be a token pasted by mistake), in the error; the valid
// lines apply regardless.
func ParseRevocations(data []byte) (Revocations, error) {
	rv := Revocations{Subjects: map[string]bool{}, TokenIDs: map[string]bool{}}
	var bad []string
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		kind, value, _ := strings.Cut(string(line), ":")
		value = strings.TrimSpace(value)
		switch {
		case len(line) > maxRevocationLine:
			bad = append(bad, fmt.Sprintf("line %d: longer than %d bytes", i+1, maxRevocationLine))
		case !utf8.Valid(line):
			bad = append(bad, fmt.Sprintf("line %d: not UTF-8", i+1))
		case (kind == "sub" || kind == "jti") && value == "":
			bad = append(bad, fmt.Sprintf("line %d: %s: without a value", i+1, kind))
		case kind == "sub":
			rv.Subjects[value] = true
		case kind == "jti":
			rv.TokenIDs[value] = true
		default:
			bad = append(bad, fmt.Sprintf("line %d: not sub:<subject> or jti:<token id>", i+1))
		}
	}
	if len(bad) > 0 {
		if len(bad) > 10 {
			bad = append(bad[:10], fmt.Sprintf("and %d more", len(bad)-10))
		}
		return rv, fmt.Errorf("revocations file: %d lines ignored: %s", len(bad), strings.Join(bad, "; "))
	}
	return rv, nil
}

func readRevocations(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(bufio.NewReader(f), maxRevocationsFile+1))
	if err == nil && len(data) > maxRevocationsFile {
		err = fmt.Errorf("%s is larger than %d bytes", path, maxRevocationsFile)
	}
	return data, err
}

// RevocationsFile watches a revocations file (a mounted ConfigMap: the
// kubelet's ..data swaps are followed) and applies it to a Server.
type RevocationsFile struct {
	r *filewatch.Reloader[Revocations]
}

// errRevocationsUnreadable marks a load that kept the previous revocations.
var errRevocationsUnreadable = errors.New("revocations file unreadable; the previous revocations stay in force")

// WatchRevocations loads path once (an unreadable file is a start-up error:
// revocations must not silently lapse) and applies it to srv. Run keeps it
// current.
func (s *Server) WatchRevocations(path string, log *slog.Logger) (*RevocationsFile, error) {
	if _, err := readRevocations(path); err != nil {
		return nil, fmt.Errorf("revocations file: %w", err)
	}
	r, err := filewatch.NewReloader(filewatch.ReloaderOptions[Revocations]{
		Dirs:   []string{filepath.Dir(path)},
		Logger: log,
		Load: func(cur Revocations) (Revocations, string, error) {
			data, err := readRevocations(path)
			if err != nil {
				return cur, cur.fingerprint(), fmt.Errorf("%w: %v", errRevocationsUnreadable, err)
			}
			next, err := ParseRevocations(data)
			// Applied here, under the reloader's lock and before Changed
			// fires: loads are serialised, and a watcher of Changed sees
			// the server already enforcing the new list.
			if fp := next.fingerprint(); fp != cur.fingerprint() {
				s.SetRevocations(next)
			}
			return next, next.fingerprint(), err
		},
		OnLoad: func(rv Revocations) {
			log.Info("revocations loaded", "event", "revocations_loaded", "subjects", len(rv.Subjects), "token_ids", len(rv.TokenIDs))
		},
		OnError: func(err error) {
			log.Error("revocations file problem", "event", "revocations_error", "error", err.Error())
		},
		OnRecover: func() { log.Info("revocations file readable again", "event", "revocations_recovered") },
	})
	if err != nil {
		return nil, err
	}
	return &RevocationsFile{r: r}, nil
}

// Run watches the file until ctx is done, applying every change.
func (f *RevocationsFile) Run(ctx context.Context) error { return f.r.Run(ctx) }

// Started is closed once Run watches the file.
func (f *RevocationsFile) Started() <-chan struct{} { return f.r.Started() }

// revocationsFileAdmin names the file in the revoked sessions' log lines.
var revocationsFileAdmin = &hmac.AdminClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: "revocations-file"}}

// SetRevocations refuses the sessions rv names from now on and ends those
// that are live.
func (s *Server) SetRevocations(rv Revocations) {
	s.mu.Lock()
	s.revocations.Store(&rv)
	var hit []*session
	for ss := range s.sessions {
		if rv.match(ss.claims) {
			hit = append(hit, ss)
		}
		hit = append(hit, ss.matchingObservers(func(o *session) bool { return rv.match(o.claims) })...)
	}
	s.mu.Unlock()
	for _, ss := range hit {
		ss.revoke(revocationsFileAdmin)
	}
}
