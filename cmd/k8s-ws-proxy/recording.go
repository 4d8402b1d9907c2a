package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/recording"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/proxy"
)

// recordingFlags are the serve flags for session recording and
// impersonation.
type recordingFlags struct {
	mode            string
	dir             string
	includeInput    bool
	maxBytes        int64
	uploadURL       string
	uploadAccessKey string
	uploadSecretKey string
	uploadRegion    string
	impersonate     bool
	exitNotice      string
}

func (r *recordingFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.mode, "recording", "off", "session recording: off, best-effort (sessions go on when recording fails) or required (no session without a recording)")
	fs.StringVar(&r.dir, "recording-dir", "/var/lib/k8s-ws-proxy/recordings", "spool directory of asciicast recordings (<sid>.cast), kept until the object store confirms them")
	fs.BoolVar(&r.includeInput, "recording-include-input", false, "also record what users type (i events); off by default because keystrokes include passwords")
	fs.Int64Var(&r.maxBytes, "recording-max-bytes", 0, "largest recording per session; at the limit best-effort stops recording, required ends the session; 0 means no limit")
	fs.StringVar(&r.uploadURL, "recording-upload-url", "", "S3-compatible store for finished recordings: http(s)://host[:port]/bucket[/prefix]; empty keeps them in --recording-dir")
	fs.StringVar(&r.uploadAccessKey, "recording-upload-access-key-file", "", "file holding the store's access key id (a mounted Secret; read for every request)")
	fs.StringVar(&r.uploadSecretKey, "recording-upload-secret-key-file", "", "file holding the store's secret access key (a mounted Secret; read for every request)")
	fs.StringVar(&r.uploadRegion, "recording-upload-region", recording.DefaultRegion, "region for request signing")
	fs.StringVar(&r.exitNotice, "exit-notice", string(proxy.ExitNoticeDefault), "write \"[k8s-ws-proxy] process exited with code N\" to the terminal: auto (tty sessions on v4 or older protocols, which guacd speaks; guacd ignores the status channel), always or never")
	fs.BoolVar(&r.impersonate, "impersonate", false, "act as the token's user (sub, groups) at the API server: its RBAC decides and its audit log names the user")
}

// recorder builds the recorder and starts shipping what the spool holds
// (recordings left by a crash or a restart first). stored is called for
// each recording the store confirmed.
func (r *recordingFlags) recorder(ctx context.Context, log *slog.Logger, stored func()) (*recording.Recorder, error) {
	mode, err := recording.ParseMode(r.mode)
	if err != nil {
		return nil, fmt.Errorf("--recording: %w", err)
	}
	var up *recording.Uploader
	if mode != recording.Off && r.uploadURL != "" {
		up, err = recording.NewUploader(recording.UploaderConfig{
			URL: r.uploadURL, AccessKeyFile: r.uploadAccessKey, SecretKeyFile: r.uploadSecretKey,
			Region: r.uploadRegion, Logger: log,
			Stored: func(string, string, int64) { stored() },
		})
		if err != nil {
			return nil, err
		}
	}
	rec, err := recording.New(recording.Config{
		Mode: mode, Dir: r.dir, IncludeInput: r.includeInput, MaxBytes: r.maxBytes, Uploader: up, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	return rec, rec.Start(ctx)
}
