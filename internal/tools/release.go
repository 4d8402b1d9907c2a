package tools

import (
	"context"
)

// The release tool chain: what the tag workflow runs, built here from the
// same Go modules at the same versions so `make test` exercises it offline.
// .github/workflows/release.yml installs these exact versions; a test keeps
// the two in step.
const (
	// ActionlintVersion lints .github/workflows in `make test`.
	ActionlintVersion = "v1.7.12"
	// CosignVersion signs and verifies the image index and its SBOM
	// attestation.
	CosignVersion = "v3.1.3"
	// DistributionVersion is the CNCF distribution registry the release tests
	// push the image, the SBOM, the signatures and the chart to.
	DistributionVersion = "v3.1.2"
	// CycloneDXGomodVersion writes the image's CycloneDX SBOM.
	CycloneDXGomodVersion = "v1.10.0"
)

// Every release tool is a plain `go install pkg@version` (none of their
// go.mod files has a replace directive), so the main go.mod carries none of
// their dependencies; goTool keys the cache on package, version and ldflags.
var (
	actionlintTool = goTool{
		name: "actionlint", pkg: "github.com/rhysd/actionlint/cmd/actionlint", version: ActionlintVersion,
		ldflags: "-s -w -X github.com/rhysd/actionlint.version=" + ActionlintVersion,
	}
	cosignTool = goTool{
		name: "cosign", pkg: "github.com/sigstore/cosign/v3/cmd/cosign", version: CosignVersion,
		ldflags: "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=" + CosignVersion,
	}
	registryTool = goTool{
		name: "registry", pkg: "github.com/distribution/distribution/v3/cmd/registry", version: DistributionVersion,
		ldflags: "-s -w -X github.com/distribution/distribution/v3/version.version=" + DistributionVersion,
	}
	cyclonedxGomodTool = goTool{
		name: "cyclonedx-gomod", pkg: "github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod", version: CycloneDXGomodVersion,
		ldflags: "-s -w",
	}
)

// Actionlint returns the pinned actionlint binary (about 30 s cold).
func Actionlint(ctx context.Context) (string, error) { return actionlintTool.ensure(ctx) }

// Cosign returns the pinned cosign binary. Cold, it compiles the sigstore
// stack and the cloud KMS clients: minutes on 2 cores.
func Cosign(ctx context.Context) (string, error) { return cosignTool.ensure(ctx) }

// Registry returns the pinned CNCF distribution registry binary.
func Registry(ctx context.Context) (string, error) { return registryTool.ensure(ctx) }

// CycloneDXGomod returns the pinned cyclonedx-gomod binary.
func CycloneDXGomod(ctx context.Context) (string, error) { return cyclonedxGomodTool.ensure(ctx) }
