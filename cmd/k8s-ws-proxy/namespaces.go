package main

import (
	"flag"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/proxy"
)

// namespaceFlags are serve's namespace policy (proxy.NamespacePolicy).
type namespaceFlags struct {
	allowed, denied string
}

func (f *namespaceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.allowed, "allowed-namespaces", "", "comma-separated namespace globs sessions may target (path.Match: *, ?, [a-z]); empty allows all not denied")
	fs.StringVar(&f.denied, "denied-namespaces", "", "comma-separated namespace globs sessions may never target, even if allowed (the chart sets kube-system); refused with 403 namespace_denied")
}

func (f namespaceFlags) policy() (proxy.NamespacePolicy, error) {
	return proxy.NewNamespacePolicy(splitList(f.allowed), splitList(f.denied))
}
