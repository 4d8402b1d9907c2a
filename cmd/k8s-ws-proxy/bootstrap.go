package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/bootstrap"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/kubeclient"
)

// bootstrapSecret is the Helm hook's entry point: create the HMAC key
// Secret if it is absent, leave it alone if present. Exit codes: 0 done
// (exists, created, or created by a concurrent writer), 1 failure, 2 usage.
func bootstrapSecret(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newCommand("bootstrap-secret", "--namespace NS [--secret-name NAME] [--key-name key] [--kubeconfig PATH]\n"+
		"       k8s-ws-proxy bootstrap-secret --rotate --namespace NS [--max-ttl D --leeway D --propagation-delay D]",
		`Creates the HMAC key Secret with 32 random bytes if it does not exist; an
existing Secret is left untouched. With --rotate, adds a new key to the
Secret instead and prunes keys no valid token can still carry (see
docs/tokens.md, "Rotating keys"). Keys are never printed.`)
	fs.envVars = map[string]string{"namespace": "POD_NAMESPACE"}
	namespace := fs.String("namespace", getenv("POD_NAMESPACE"), "namespace of the Secret")
	secretName := fs.String("secret-name", bootstrap.DefaultSecretName, "name of the HMAC key Secret")
	keyName := fs.String("key-name", bootstrap.DefaultKeyName, "data key holding the HMAC key inside the Secret")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (empty: in-cluster ServiceAccount credentials)")
	timeout := fs.Duration("timeout", 2*time.Minute, "overall deadline for the whole run")
	attempts := fs.Int("attempts", 5, "tries per API call while the API server is unreachable or answers 429/5xx")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	rotate := fs.Bool("rotate", false, "add a new key named after its creation time (key-YYYYMMDDTHHMMSSZ), keep the previous ones while a token may carry them, prune older ones (--key-name is not used)")
	maxTTL := fs.Duration("max-ttl", hmac.DefaultMaxTTL, "with --rotate: the proxies' --max-ttl")
	leeway := fs.Duration("leeway", hmac.DefaultLeeway, "with --rotate: the proxies' --leeway")
	propagation := fs.Duration("propagation-delay", bootstrap.DefaultPropagationDelay, "with --rotate: how long a Secret change takes to reach every proxy (the signers' delay)")
	if code, stop := fs.parse(args, stdout, stderr); stop {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bootstrap-secret: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "bootstrap-secret: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})).
		With("component", "bootstrap-secret", "version", version)
	routeKlog(log)

	if *namespace == "" {
		log.Error("no namespace: pass --namespace or set POD_NAMESPACE")
		return 2
	}

	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		log.Error("cannot load Kubernetes client configuration", "error", err.Error())
		return 1
	}
	cfg.UserAgent = "k8s-ws-proxy-bootstrap/" + version
	// Each request is bounded by the bootstrap package; keep client-go's own
	// rate limiter out of the way for a handful of calls.
	cfg.QPS, cfg.Burst = 5, 10
	client, err := kubeclient.New(cfg)
	if err != nil {
		log.Error("cannot build Kubernetes client", "error", err.Error())
		return 1
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	opts := bootstrap.Options{
		Namespace:  *namespace,
		SecretName: *secretName,
		KeyName:    *keyName,
		Attempts:   *attempts,
		Logger:     log,
		APIServer:  cfg.Host,
	}
	if *rotate {
		if _, err := bootstrap.RotateSecret(ctx, client, bootstrap.RotateOptions{
			Options: opts, MaxTTL: *maxTTL, Leeway: *leeway, PropagationDelay: *propagation,
		}); err != nil {
			log.Error(err.Error(), "kind", string(bootstrap.KindOf(err)))
			return 1
		}
		return 0
	}
	out, err := bootstrap.EnsureSecret(ctx, client, opts)
	if err != nil {
		log.Error(err.Error(), "kind", string(bootstrap.KindOf(err)))
		return 1
	}
	log.Debug("done", "outcome", string(out))
	return 0
}

// restConfig uses the pod's ServiceAccount unless a kubeconfig is named, the
// way the proxy itself does.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("not running in a pod and no --kubeconfig given: %w", err)
		}
		return cfg, nil
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}
