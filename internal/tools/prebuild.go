package tools

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// A prebuilt tool: its name for the log and the call that ensures it.
type prebuilt struct {
	name   string
	ensure func(context.Context) (string, error)
}

// prebuildLanes are the tools the suites use, in two lanes that run side by
// side. The first holds the k8s.io/kubernetes builds, one after another so
// that kubectl reuses the control plane's compiled packages instead of
// compiling them at the same time; the second holds everything else, which
// shares little with them. TestPrebuildCoversEveryTool keeps the list whole.
var prebuildLanes = [][]prebuilt{
	{
		// One go build makes all three (controlPlane).
		{"kube-apiserver", KubeAPIServer},
		{"kube-controller-manager", KubeControllerManager},
		{"kube-scheduler", KubeScheduler},
		{"kubectl", Kubectl},
		{"kubernetes schemas", KubernetesSchemaLocation},
	},
	{
		{"etcd", Etcd},
		{"kwok", KWOK},
		{"helm " + HelmV3Version, func(ctx context.Context) (string, error) { return Helm(ctx, HelmV3Version) }},
		{"helm " + HelmV4Version, func(ctx context.Context) (string, error) { return Helm(ctx, HelmV4Version) }},
		{"kubeconform", Kubeconform},
		{"seaweedfs", SeaweedFS},
		{"flux schemas", FluxSchemaLocation},
		{"registry", Registry},
		{"cosign", Cosign},
		{"cyclonedx-gomod", CycloneDXGomod},
		{"actionlint", Actionlint},
		{"node ws", NodeWS},
	},
}

// Prebuild ensures every tool before `go test` starts (make tools), so that
// no test package spends its timeout building one, and test packages do not
// build different tools at the same time on a small machine. Every tool is
// tried; the error joins the failures.
func Prebuild(ctx context.Context, log *slog.Logger) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, lane := range prebuildLanes {
		wg.Go(func() {
			for _, t := range lane {
				start := time.Now()
				path, err := t.ensure(ctx)
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", t.name, err))
					mu.Unlock()
					log.Error("tool", "tool", t.name, "error", err)
					continue
				}
				log.Info("tool", "tool", t.name, "seconds", time.Since(start).Round(100*time.Millisecond).Seconds(), "path", path)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
