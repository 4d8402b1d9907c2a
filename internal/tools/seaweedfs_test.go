package tools

import (
	"strings"
	"testing"
)

func TestSeaweedFSModulePinned(t *testing.T) {
	data := toolGoMod(t, seaweedFSBuild(), "github.com/seaweedfs/seaweedfs "+SeaweedFSVersion)
	// Upstream's own replacement must stay, or the binary is not built
	// from the dependencies SeaweedFS builds with.
	if !strings.Contains(string(data), "replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0") {
		t.Error("the upstream go-bip39 replacement is missing")
	}
}
