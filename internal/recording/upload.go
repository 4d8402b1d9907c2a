package recording

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// DefaultRegion signs requests when none is set; S3-compatible stores
// accept it.
const DefaultRegion = "us-east-1"

// UploaderConfig configures the shipping of finished recordings to an
// S3-compatible object store.
type UploaderConfig struct {
	// URL is http(s)://host[:port]/bucket[/prefix]: the endpoint, the
	// bucket (path-style, which every S3-compatible store serves) and an
	// optional key prefix.
	URL string
	// AccessKeyFile and SecretKeyFile hold the credentials (a mounted
	// Secret). They are read again for every request, so a rotated Secret
	// takes effect without a restart.
	AccessKeyFile, SecretKeyFile string
	// Region defaults to DefaultRegion.
	Region string
	// PartSize is the multipart part size; objects larger than it are sent
	// in parts. Default 16 MiB, minimum 5 MiB (the S3 minimum).
	PartSize uint64
	// MinBackoff and MaxBackoff bound the retry delay, which doubles per
	// failed attempt of one file. Defaults 1 s and 5 min.
	MinBackoff, MaxBackoff time.Duration
	// Transport overrides the HTTP transport (a custom CA, tests).
	Transport http.RoundTripper
	Logger    *slog.Logger
	// Stored is called after the store confirmed an object and the local
	// copy was removed; Failed after each failed attempt.
	Stored func(file, key string, size int64)
	Failed func(file string, attempt int, err error)
}

// Uploader ships files from a spool directory and removes each one only
// after the store confirmed the whole object.
type Uploader struct {
	cfg    UploaderConfig
	client *minio.Client
	bucket string
	prefix string
	log    *slog.Logger

	mu      sync.Mutex
	queue   []string
	queued  map[string]bool
	attempt map[string]int
	wake    chan struct{}
	idle    *sync.Cond
	busy    int // files queued, in flight or waiting for a retry
}

// ParseUploadURL splits an upload URL into endpoint, TLS, bucket and prefix.
func ParseUploadURL(raw string) (endpoint string, secure bool, bucket, prefix string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, "", "", fmt.Errorf("recording upload URL: %w", err)
	}
	switch u.Scheme {
	case "https":
		secure = true
	case "http":
	default:
		return "", false, "", "", fmt.Errorf("recording upload URL %q: scheme must be http or https", raw)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", false, "", "", fmt.Errorf("recording upload URL %q: want http(s)://host[:port]/bucket[/prefix] without user, query or fragment", raw)
	}
	p := strings.Trim(u.Path, "/")
	bucket, prefix, _ = strings.Cut(p, "/")
	if bucket == "" {
		return "", false, "", "", fmt.Errorf("recording upload URL %q: no bucket in the path", raw)
	}
	if prefix != "" {
		prefix = path.Clean(prefix) + "/"
		if strings.HasPrefix(prefix, "../") || prefix == "./" {
			return "", false, "", "", fmt.Errorf("recording upload URL %q: bad prefix", raw)
		}
	}
	return u.Host, secure, bucket, prefix, nil
}

// NewUploader checks cfg; it does not contact the store.
func NewUploader(cfg UploaderConfig) (*Uploader, error) {
	endpoint, secure, bucket, prefix, err := ParseUploadURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.AccessKeyFile == "" || cfg.SecretKeyFile == "" {
		return nil, errors.New("recording upload: access key and secret key files are required")
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = 16 << 20
	}
	if cfg.PartSize < 5<<20 {
		return nil, fmt.Errorf("recording upload: part size %d is below the S3 minimum of 5 MiB", cfg.PartSize)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Minute, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds:        credentials.New(&fileCredentials{access: cfg.AccessKeyFile, secret: cfg.SecretKeyFile}),
		Secure:       secure,
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
		Transport:    cfg.Transport,
		// Retries are ours: a file stays in the spool until confirmed.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("recording upload: %w", err)
	}
	u := &Uploader{
		cfg: cfg, client: client, bucket: bucket, prefix: prefix, log: cfg.Logger,
		queued: map[string]bool{}, attempt: map[string]int{}, wake: make(chan struct{}, 1),
	}
	u.idle = sync.NewCond(&u.mu)
	return u, nil
}

// Key returns the object key of a spool file.
func (u *Uploader) Key(file string) string { return u.prefix + filepath.Base(file) }

// Bucket is the target bucket.
func (u *Uploader) Bucket() string { return u.bucket }

// Enqueue schedules file for upload.
func (u *Uploader) Enqueue(file string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.queued[file] {
		return
	}
	u.queued[file] = true
	u.busy++
	u.queue = append(u.queue, file)
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// Wait blocks until no file is queued, in flight or waiting for a retry.
func (u *Uploader) Wait() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for u.busy > 0 {
		u.idle.Wait()
	}
}

// Run uploads queued files one at a time until ctx ends. A file whose
// upload fails is retried after a backoff; an interrupted upload leaves
// the file in the spool for the next start.
func (u *Uploader) Run(ctx context.Context) {
	var timers sync.WaitGroup
	defer timers.Wait()
	for {
		u.mu.Lock()
		var file string
		if len(u.queue) > 0 {
			file, u.queue = u.queue[0], u.queue[1:]
		}
		u.mu.Unlock()
		if file == "" {
			select {
			case <-ctx.Done():
				return
			case <-u.wake:
			}
			continue
		}
		err := u.upload(ctx, file)
		if ctx.Err() != nil {
			return
		}
		u.mu.Lock()
		if err == nil {
			delete(u.queued, file)
			delete(u.attempt, file)
			u.busy--
			u.idle.Broadcast()
			u.mu.Unlock()
			continue
		}
		u.attempt[file]++
		n := u.attempt[file]
		u.mu.Unlock()
		delay := u.backoff(n)
		u.log.Warn("recording upload failed; kept in the spool", "event", "recording_upload_failed",
			"file", filepath.Base(file), "attempt", n, "retry_in", delay.String(), "error", err.Error())
		if u.cfg.Failed != nil {
			u.cfg.Failed(file, n, err)
		}
		timers.Add(1)
		go func() {
			defer timers.Done()
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			u.mu.Lock()
			u.queue = append(u.queue, file)
			u.mu.Unlock()
			select {
			case u.wake <- struct{}{}:
			default:
			}
		}()
	}
}

// backoff doubles from MinBackoff to MaxBackoff, with up to 20% jitter so
// that nodes recovering together do not retry in step.
func (u *Uploader) backoff(attempt int) time.Duration {
	d := u.cfg.MinBackoff
	for i := 1; i < attempt && d < u.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, u.cfg.MaxBackoff)
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}

func (u *Uploader) upload(ctx context.Context, file string) error {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil // already shipped by an earlier attempt
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	key := u.Key(file)
	info, err := u.client.PutObject(ctx, u.bucket, key, f, fi.Size(), minio.PutObjectOptions{
		ContentType: MediaType,
		PartSize:    u.cfg.PartSize,
		// One part in flight: a node's uplink is shared with sessions.
		NumThreads: 1,
	})
	if err != nil {
		return err
	}
	if info.Size != fi.Size() {
		return fmt.Errorf("store confirmed %d bytes of %d", info.Size, fi.Size())
	}
	f.Close()
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("uploaded, but removing the spool file: %w", err)
	}
	u.log.Info("recording stored", "event", "recording_stored", "file", filepath.Base(file),
		"bucket", u.bucket, "key", key, "bytes", fi.Size())
	if u.cfg.Stored != nil {
		u.cfg.Stored(file, key, fi.Size())
	}
	return nil
}

// fileCredentials reads static credentials from files on every use.
type fileCredentials struct{ access, secret string }

func (p *fileCredentials) Retrieve() (credentials.Value, error) {
	a, err := os.ReadFile(p.access)
	if err != nil {
		return credentials.Value{}, fmt.Errorf("access key: %w", err)
	}
	s, err := os.ReadFile(p.secret)
	if err != nil {
		return credentials.Value{}, fmt.Errorf("secret key: %w", err)
	}
	return credentials.Value{
		AccessKeyID:     strings.TrimSpace(string(a)),
		SecretAccessKey: strings.TrimSpace(string(s)),
		SignerType:      credentials.SignatureV4,
	}, nil
}

func (p *fileCredentials) RetrieveWithCredContext(*credentials.CredContext) (credentials.Value, error) {
	return p.Retrieve()
}

// IsExpired is always true, so the files are read for every request.
func (p *fileCredentials) IsExpired() bool { return true }
