package tools

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// NodeWSVersion is the npm `ws` package the strictness tests drive: the
// WebSocket library most Node clients use, whose framing (control frames
// between fragments) differs from gorilla's.
const NodeWSVersion = "8.23.0"

// NodeWS installs ws@NodeWSVersion with npm into .cache/npm/ws-VERSION
// once and returns the node_modules directory (for NODE_PATH). Like the Go
// tools it installs into a temporary directory and renames it into place
// under a file lock.
func NodeWS(ctx context.Context) (string, error) {
	if _, err := exec.LookPath("node"); err != nil {
		return "", fmt.Errorf("node is not installed: %w", err)
	}
	root, err := serverToolRepoRoot()
	if err != nil {
		return "", err
	}
	base := filepath.Join(root, ".cache", "npm")
	dir := filepath.Join(base, "ws-"+NodeWSVersion)
	mods := filepath.Join(dir, "node_modules")
	fresh := func() bool {
		_, err := os.Stat(filepath.Join(mods, "ws", "package.json"))
		return err == nil
	}
	if fresh() {
		return mods, nil
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if fresh() {
		return mods, nil
	}
	tmp, err := os.MkdirTemp(base, ".install-ws-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--ignore-scripts",
		"--no-save", "--prefix", tmp, "ws@"+NodeWSVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm install ws@%s: %w\n%s", NodeWSVersion, err, tail(out, 4000))
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return mods, nil
}
