package tools

import "context"

// EtcdVersion is the etcd server the end-to-end harness stores the API
// server's data in. Kubernetes 1.37 supports etcd 3.5.x and newer (its own
// default is 3.7.0); 3.6 is the release line most clusters of that vintage run.
const EtcdVersion = "3.6.16"

func etcdBuild() serverToolBuild {
	// The module root is upstream's own main package (server/main.go).
	return strippedBuild("etcd", "etcd", "go.etcd.io/etcd/server/v3", "v"+EtcdVersion, "go.etcd.io/etcd/server/v3")
}

// Etcd returns the path of an etcd server binary at EtcdVersion, built from
// the Go module proxy into the repository's .cache/bin on first use.
func Etcd(ctx context.Context) (string, error) {
	return etcdBuild().ensure(ctx)
}
