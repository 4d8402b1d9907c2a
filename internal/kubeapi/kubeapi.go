// Package kubeapi runs a real kube-apiserver backed by a real etcd on loopback
// for end-to-end tests: the binaries come from internal/tools (built from the Go
// module proxy at the pinned versions), every key and certificate is generated
// per run, and authorization is the production pair Node,RBAC, so a test that
// passes here passes against what a cluster would decide.
//
// By default there is no controller-manager, scheduler or kubelet: objects are
// stored and admitted but nothing reconciles them. Tests create what
// controllers would (a Node, a Pod's status) themselves, and the
// ServiceAccount admission plugin is off because it would wait for default
// ServiceAccounts that only the controller-manager creates.
//
// Options.ControlPlane adds kube-controller-manager and kube-scheduler (built
// from the same k8s.io/kubernetes module as kube-apiserver) and KWOK playing
// the kubelet of Options.FakeNodes nodes, and turns the ServiceAccount
// admission plugin on as in a real cluster: Deployments, DaemonSets and Jobs
// then get pods, pods get scheduled and become Running, garbage collection
// runs, and a pod whose ServiceAccount does not exist is refused. Job pods
// are run by Options.JobRunner (KWOK runs nothing).
package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeconfig"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testnet"
)

// ServiceAccountIssuer is the issuer (and default audience) of the
// ServiceAccount tokens this API server signs, as in a kubeadm cluster.
const ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// Options tune a harness run. The zero value is what the tests want.
type Options struct {
	// ExtraAPIServerFlags are appended after the harness's own flags; for a
	// flag given twice the later value wins.
	ExtraAPIServerFlags []string
	// BuildTimeout bounds building the binaries when they are not cached
	// yet (a cold kube-apiserver build takes several minutes). Zero: 30 min.
	BuildTimeout time.Duration
	// AuditPolicy, when set, is an audit.k8s.io/v1 Policy (YAML); the API
	// server then writes its audit log (JSON lines) to AuditLogPath.
	AuditPolicy string
	// ReadyTimeout bounds each server's start, per attempt. Zero: 3 min,
	// generous because other test binaries may be compiling on the same cores.
	ReadyTimeout time.Duration

	// ControlPlane also runs kube-controller-manager, kube-scheduler and
	// KWOK, with the ServiceAccount admission plugin on.
	ControlPlane bool
	// FakeNodes is how many KWOK nodes (kwok-node-0...) to register and
	// wait Ready for, with ControlPlane.
	FakeNodes int
	// JobRunner, with ControlPlane, runs the pods of Jobs once they are
	// Running; nil leaves them Running forever.
	JobRunner JobRunner
}

// Server is a running etcd + kube-apiserver pair.
type Server struct {
	// URL is the API server's https://127.0.0.1:port.
	URL string
	// Dir holds the certificates, keys, etcd's data and both logs.
	Dir string
	// CA issued the API server's serving certificate and signs client
	// certificates the API server accepts (--client-ca-file). It also signed
	// the API server's client certificate toward kubelets, so a fake kubelet
	// verifies the API server with CA.Pool(), as a kubeadm kubelet does.
	CA *CA
	// KubeletCA is the --kubelet-certificate-authority: a fake kubelet's
	// serving certificate must come from KubeletServingCert.
	KubeletCA *CA
	// KubeletClientCertPEM and KubeletClientKeyPEM are what the API server
	// presents to kubelets (CN kube-apiserver-kubelet-client).
	KubeletClientCertPEM, KubeletClientKeyPEM []byte
	// AuditLogPath is the API server's audit log when Options.AuditPolicy
	// was set, else empty.
	AuditLogPath string
	// Measured start times, for reports. ControlPlaneStartup covers the
	// controller manager, the scheduler, KWOK and the fake nodes being Ready.
	EtcdStartup, APIServerStartup, ControlPlaneStartup time.Duration
	// FakeNodes are the names of the KWOK nodes (Options.FakeNodes).
	FakeNodes []string

	admin     *rest.Config
	etcd      *process
	apiserver *process

	controllerManager, scheduler, kwok *process
	stopJobs                           context.CancelFunc
	jobsDone                           chan struct{}
}

// New starts a harness for one test and stops it in t.Cleanup, printing the
// servers' log tails if the test failed.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log tail:\n%s", s.apiserver.logTail(6000))
			t.Logf("etcd log tail:\n%s", s.etcd.logTail(3000))
			for _, p := range []*process{s.controllerManager, s.scheduler, s.kwok} {
				if p != nil {
					t.Logf("%s log tail:\n%s", p.name, p.logTail(3000))
				}
			}
		}
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// Start builds (or reuses) the binaries and starts etcd and kube-apiserver,
// returning once /readyz answers ok. Stop must be called; packages that share
// one server across tests call Start in TestMain.
func Start(ctx context.Context, opts Options) (s *Server, err error) {
	if opts.BuildTimeout == 0 {
		opts.BuildTimeout = 30 * time.Minute
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 3 * time.Minute
	}
	buildCtx, cancel := context.WithTimeout(ctx, opts.BuildTimeout)
	defer cancel()
	bins, err := buildBinaries(buildCtx, opts.ControlPlane)
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp("", "kubeapi-")
	if err != nil {
		return nil, err
	}
	s = &Server{Dir: dir}
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()
	if err := s.writeCredentials(); err != nil {
		return nil, err
	}

	etcdURL, err := s.startEtcd(ctx, bins.etcd, opts.ReadyTimeout)
	if err != nil {
		return nil, err
	}
	if err := s.startAPIServer(ctx, bins.apiserver, etcdURL, opts); err != nil {
		return nil, err
	}
	if opts.ControlPlane {
		if err := s.startControlPlane(ctx, bins, opts); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Stop terminates the control plane's components, the API server, then
// etcd, and removes Dir.
func (s *Server) Stop() error {
	var errs []error
	if s.stopJobs != nil {
		s.stopJobs()
		<-s.jobsDone
	}
	for _, p := range []*process{s.kwok, s.scheduler, s.controllerManager, s.apiserver, s.etcd} {
		if p != nil {
			errs = append(errs, p.stop(15*time.Second))
		}
	}
	if s.Dir != "" {
		errs = append(errs, os.RemoveAll(s.Dir))
	}
	return errors.Join(errs...)
}

// AdminConfig returns a fresh config authenticated as a member of
// system:masters, which bypasses authorization.
func (s *Server) AdminConfig() *rest.Config {
	return rest.CopyConfig(s.admin)
}

// AdminClient is a clientset for AdminConfig.
func (s *Server) AdminClient() *kubernetes.Clientset {
	return kubernetes.NewForConfigOrDie(s.AdminConfig())
}

// UserConfig returns a config authenticated by a client certificate as user
// with groups, subject to RBAC like any real user.
func (s *Server) UserConfig(user string, groups ...string) (*rest.Config, error) {
	certPEM, keyPEM, err := s.CA.Issue(CertSpec{CommonName: user, Organizations: groups, Client: true})
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host: s.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: s.CA.CertPEM, CertData: certPEM, KeyData: keyPEM,
		},
	}, nil
}

// ServiceAccountToken asks the TokenRequest API for a token of the
// ServiceAccount namespace/name (which must exist), valid for ttl (the API
// server raises anything under 10 minutes to 10 minutes).
func (s *Server) ServiceAccountToken(ctx context.Context, namespace, name string, ttl time.Duration) (string, error) {
	secs := int64(ttl / time.Second)
	tr, err := s.AdminClient().CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// ServiceAccountConfig returns a config that authenticates with a fresh
// one-hour token of the ServiceAccount namespace/name, as a pod would.
func (s *Server) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	tok, err := s.ServiceAccountToken(ctx, namespace, name, time.Hour)
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            s.URL,
		BearerToken:     tok,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.CA.CertPEM},
	}, nil
}

// WriteKubeconfig writes cfg (from this Server) as a self-contained kubeconfig
// for programs started by a test, such as the proxy or the bootstrap command.
func (s *Server) WriteKubeconfig(path string, cfg *rest.Config) error {
	return kubeconfig.Write(path, cfg)
}

// KubeletServingCert issues a serving certificate that the API server accepts
// from a kubelet at the given addresses (the Node's InternalIP must be one).
func (s *Server) KubeletServingCert(nodeName string, ips ...net.IP) (tls.Certificate, error) {
	return s.KubeletCA.IssueTLS(CertSpec{CommonName: "system:node:" + nodeName, Organizations: []string{"system:nodes"}, IPs: ips, DNSNames: []string{nodeName}, Server: true})
}

// APIServerLogTail returns the end of the API server's log, for diagnostics.
func (s *Server) APIServerLogTail(n int) string { return s.apiserver.logTail(n) }

func (s *Server) writeCredentials() error {
	var err error
	if s.CA, err = newCA("kubeapi-harness-ca"); err != nil {
		return err
	}
	if s.KubeletCA, err = newCA("kubeapi-harness-kubelet-ca"); err != nil {
		return err
	}
	servingCert, servingKey, err := s.CA.Issue(CertSpec{
		CommonName: "kube-apiserver",
		DNSNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPs:        []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Server:     true,
	})
	if err != nil {
		return err
	}
	adminCert, adminKey, err := s.CA.Issue(CertSpec{CommonName: "kubeapi-admin", Organizations: []string{"system:masters"}, Client: true})
	if err != nil {
		return err
	}
	if s.KubeletClientCertPEM, s.KubeletClientKeyPEM, err = s.CA.Issue(CertSpec{CommonName: "kube-apiserver-kubelet-client", Client: true}); err != nil {
		return err
	}
	saKey, saPub, err := newSigningKey()
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.crt":                s.CA.CertPEM,
		"kubelet-ca.crt":        s.KubeletCA.CertPEM,
		"apiserver.crt":         servingCert,
		"apiserver.key":         servingKey,
		"apiserver-kubelet.crt": s.KubeletClientCertPEM,
		"apiserver-kubelet.key": s.KubeletClientKeyPEM,
		"service-account.key":   saKey,
		"service-account.pub":   saPub,
		"admin.crt":             adminCert,
		"admin.key":             adminKey,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(s.Dir, name), data, 0o600); err != nil {
			return err
		}
	}
	s.admin = &rest.Config{
		TLSClientConfig: rest.TLSClientConfig{CAData: s.CA.CertPEM, CertData: adminCert, KeyData: adminKey},
		// client-go's default 5 QPS would make fixture setup, not the
		// server, the slow part of every test.
		QPS: 500, Burst: 1000,
	}
	return nil
}

const startAttempts = 3

func (s *Server) startEtcd(ctx context.Context, bin string, timeout time.Duration) (string, error) {
	begin := time.Now()
	for attempt := 1; ; attempt++ {
		ports, err := testnet.FreePorts(2)
		if err != nil {
			return "", err
		}
		clientURL, peerURL := loopbackURL("http", ports[0]), loopbackURL("http", ports[1])
		dataDir := filepath.Join(s.Dir, "etcd-data-"+strconv.Itoa(attempt))
		// Plain HTTP: etcd listens on loopback only and only the API
		// server talks to it; TLS there would test etcd, not our code.
		p, err := startProcess("etcd", s.Dir, bin, []string{
			"--name=harness",
			"--data-dir=" + dataDir,
			"--listen-client-urls=" + clientURL,
			"--advertise-client-urls=" + clientURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=harness=" + peerURL,
			"--initial-cluster-state=new",
			// Durability is worthless for a throwaway store and fsync
			// dominates write latency on a shared disk.
			"--unsafe-no-fsync",
			"--log-level=warn",
		})
		if err != nil {
			return "", err
		}
		s.etcd = p
		client := &http.Client{Timeout: 5 * time.Second}
		err = waitReady(ctx, p, timeout, func(ctx context.Context) error {
			return checkHealth(ctx, client, clientURL+"/health", `"health":"true"`)
		})
		if err == nil {
			s.EtcdStartup = time.Since(begin)
			return clientURL, nil
		}
		if errors.Is(err, errExited) && p.portInUse() && attempt < startAttempts {
			continue
		}
		return "", fmt.Errorf("etcd: %w\n%s", err, p.logTail(3000))
	}
}

func (s *Server) startAPIServer(ctx context.Context, bin, etcdURL string, opts Options) error {
	begin := time.Now()
	f := func(name string) string { return filepath.Join(s.Dir, name) }
	for attempt := 1; ; attempt++ {
		ports, err := testnet.FreePorts(1)
		if err != nil {
			return err
		}
		s.URL = loopbackURL("https", ports[0])
		s.admin.Host = s.URL
		args := []string{
			"--etcd-servers=" + etcdURL,
			// A per-run prefix would allow sharing etcd; one etcd per run
			// is simpler and isolates retries.
			"--etcd-prefix=/registry",
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(ports[0]),
			"--advertise-address=127.0.0.1",
			// No Endpoints for the kubernetes Service: a loopback
			// address is not a valid endpoint and nothing here needs it.
			"--endpoint-reconciler-type=none",
			"--service-cluster-ip-range=10.96.0.0/16",
			"--tls-cert-file=" + f("apiserver.crt"),
			"--tls-private-key-file=" + f("apiserver.key"),
			"--client-ca-file=" + f("ca.crt"),
			"--authorization-mode=Node,RBAC",
			"--service-account-issuer=" + ServiceAccountIssuer,
			"--service-account-key-file=" + f("service-account.pub"),
			"--service-account-signing-key-file=" + f("service-account.key"),
			"--kubelet-client-certificate=" + f("apiserver-kubelet.crt"),
			"--kubelet-client-key=" + f("apiserver-kubelet.key"),
			"--kubelet-certificate-authority=" + f("kubelet-ca.crt"),
			// Tests register Nodes with an InternalIP on loopback and no
			// resolvable hostname.
			"--kubelet-preferred-address-types=InternalIP",
			"--enable-admission-plugins=NodeRestriction",
			"--profiling=false",
			"--cert-dir=" + f("cert-dir"),
			"--v=1",
		}
		if !opts.ControlPlane {
			args = append(args, "--disable-admission-plugins=ServiceAccount")
		}
		if opts.AuditPolicy != "" {
			if err := os.WriteFile(f("audit-policy.yaml"), []byte(opts.AuditPolicy), 0o600); err != nil {
				return err
			}
			s.AuditLogPath = f("audit.log")
			// Batching off: an event is in the file once the request is
			// done, so a test reads it without waiting for a flush.
			args = append(args, "--audit-policy-file="+f("audit-policy.yaml"), "--audit-log-path="+s.AuditLogPath,
				"--audit-log-mode=blocking", "--audit-log-format=json")
		}
		args = append(args, opts.ExtraAPIServerFlags...)
		p, err := startProcess("kube-apiserver", s.Dir, bin, args)
		if err != nil {
			return err
		}
		s.apiserver = p
		client, err := s.readyzClient()
		if err != nil {
			return err
		}
		err = waitReady(ctx, p, opts.ReadyTimeout, func(ctx context.Context) error {
			return checkHealth(ctx, client, s.URL+"/readyz", "ok")
		})
		client.CloseIdleConnections()
		if err == nil {
			s.APIServerStartup = time.Since(begin)
			return nil
		}
		if errors.Is(err, errExited) && p.portInUse() && attempt < startAttempts {
			continue
		}
		return fmt.Errorf("kube-apiserver: %w\n%s", err, p.logTail(6000))
	}
}

func (s *Server) readyzClient() (*http.Client, error) {
	cert, err := tls.X509KeyPair(s.admin.CertData, s.admin.KeyData)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs:      s.CA.Pool(),
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
		}},
	}, nil
}

// waitReady polls check until it succeeds, the process exits, or timeout.
func waitReady(ctx context.Context, p *process, timeout time.Duration, check func(context.Context) error) error {
	err := poll.Until(ctx, 100*time.Millisecond, timeout, func(ctx context.Context) error {
		select {
		case <-p.done:
			return poll.Stop(fmt.Errorf("%w (%v)", errExited, p.waitErr))
		default:
		}
		return check(ctx)
	})
	if err != nil && !errors.Is(err, errExited) {
		return fmt.Errorf("not ready after %s: %w", timeout, err)
	}
	return err
}

func checkHealth(ctx context.Context, client *http.Client, url, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(want)) {
		return fmt.Errorf("%s: %s %q", url, resp.Status, body)
	}
	return nil
}
