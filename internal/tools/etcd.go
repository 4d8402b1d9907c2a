package tools

import (
	"context"
	"path/filepath"
)

// EtcdVersion is the etcd server the end-to-end harness stores the API
// server's data in. Kubernetes 1.37 supports etcd 3.5.x and newer (its own
// default is 3.7.0); 3.6 is the release line most clusters of that vintage run.
const EtcdVersion = "3.6.16"

func etcdBuild() serverToolBuild {
	return serverToolBuild{
		name:      "etcd",
		version:   "v" + EtcdVersion,
		moduleDir: filepath.Join("internal", "tools", "build", "etcd"),
		// The module root is upstream's own main package (server/main.go).
		pkg:     "go.etcd.io/etcd/server/v3",
		pinned:  "go.etcd.io/etcd/server/v3 v" + EtcdVersion,
		ldflags: "-s -w",
	}
}

// Etcd returns the path of an etcd server binary at EtcdVersion, built from
// the Go module proxy into the repository's .cache/bin on first use.
func Etcd(ctx context.Context) (string, error) {
	return etcdBuild().ensure(ctx)
}
