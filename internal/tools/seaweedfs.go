package tools

import "context"

// SeaweedFSVersion is the SeaweedFS release whose S3 gateway the recording
// upload tests store objects in. SeaweedFS publishes no semver module
// versions; this is the pseudo-version of the commit the Go module proxy
// serves, pinned in internal/tools/build/seaweedfs/go.mod. SeaweedFS
// (Apache-2.0) rather than MinIO: the platform this chart comes from runs it
// already, and MinIO's server is AGPL.
const SeaweedFSVersion = "v0.0.0-20261109003541-7506e5f91cd6"

func seaweedFSBuild() serverToolBuild {
	return strippedBuild("weed", "seaweedfs", "github.com/seaweedfs/seaweedfs", SeaweedFSVersion, "github.com/seaweedfs/seaweedfs/weed")
}

// SeaweedFS returns the path of the `weed` binary at SeaweedFSVersion,
// built from the Go module proxy into the repository's .cache/bin on first
// use. A cold build compiles SeaweedFS and its cloud SDKs: many minutes on
// two cores.
func SeaweedFS(ctx context.Context) (string, error) {
	return seaweedFSBuild().ensure(ctx)
}
