package proxy

import (
	"fmt"
	"path"
)

// NamespacePolicy is the operator's say over which namespaces this proxy
// opens sessions in, whatever a valid token grants: a platform team can keep
// kube-system out of reach even of its own control plane's tokens. Patterns
// are path.Match globs (*, ?, [a-z]); namespace names hold no '/', so '*'
// matches any run of characters.
type NamespacePolicy struct {
	// Allowed, when not empty, is the only namespaces sessions may target.
	Allowed []string
	// Denied namespaces are refused even when Allowed matches them.
	Denied []string
}

// NewNamespacePolicy checks every pattern's syntax, so a typo fails the
// proxy's start rather than silently matching nothing.
func NewNamespacePolicy(allowed, denied []string) (NamespacePolicy, error) {
	for _, p := range append(append([]string{}, allowed...), denied...) {
		if p == "" {
			return NamespacePolicy{}, fmt.Errorf("namespace pattern is empty")
		}
		if _, err := path.Match(p, ""); err != nil {
			return NamespacePolicy{}, fmt.Errorf("namespace pattern %q: %w", p, err)
		}
	}
	return NamespacePolicy{Allowed: allowed, Denied: denied}, nil
}

// Allows reports whether sessions may target namespace ns.
func (p NamespacePolicy) Allows(ns string) bool {
	if matchAny(p.Denied, ns) {
		return false
	}
	return len(p.Allowed) == 0 || matchAny(p.Allowed, ns)
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, s); ok { // patterns were checked by NewNamespacePolicy
			return true
		}
	}
	return false
}
