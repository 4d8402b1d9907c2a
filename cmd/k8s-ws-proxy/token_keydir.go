package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/bootstrap"
)

// tokenKeyDirFlags adds mint's --key-dir and --propagation-delay: sign with
// the key a rotation-aware control plane would pick from the mounted Secret.
func tokenKeyDirFlags(fs *flag.FlagSet) (keyDir *string, propagation *time.Duration) {
	keyDir = fs.String("key-dir", "", "directory of keys (the Secret mounted whole): sign with the newest key older than --propagation-delay (docs/tokens.md, \"Rotating keys\")")
	propagation = fs.Duration("propagation-delay", bootstrap.DefaultPropagationDelay, "with --key-dir: how long a new key takes to reach every proxy")
	return keyDir, propagation
}

// tokenPickKey resolves --key-dir to the key file to sign with. It reports
// ok=false with the exit code when minting must stop.
func tokenPickKey(keyFile *string, keyDir string, propagation time.Duration, stderr io.Writer) (int, bool) {
	if keyDir == "" {
		return 0, true
	}
	if *keyFile != "" {
		return tokenFail(stderr, "token mint: --key-file and --key-dir are exclusive"), false
	}
	name, fallback, err := bootstrap.SelectSigningKey(keyDir, time.Now(), propagation)
	if err != nil {
		return tokenFail(stderr, "token mint: --key-dir: %v", err), false
	}
	if fallback {
		fmt.Fprintf(stderr, "token mint: every key in %s is younger than --propagation-delay %s; signing with the oldest, %s\n", keyDir, propagation, name)
	}
	*keyFile = filepath.Join(keyDir, name)
	return 0, true
}
