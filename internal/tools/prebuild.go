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

// prebuildLanes are the tools the suites use. The first lane holds the
// k8s.io/kubernetes builds, one after another so that kubectl reuses the
// control plane's compiled packages instead of compiling them at the same
// time. The second is a queue, longest build first (cold seconds on 2
// cores, two builds at a time, in the comments): one worker starts on it
// at once, the first joins it when its lane is done, so neither core idles
// while the other finishes (fixed lanes left one idle for ten minutes of
// a cold run). TestPrebuildCoversEveryTool keeps the list whole.
var prebuildLanes = [][]prebuilt{
	{
		// One go build makes all three (controlPlane): 1380 s.
		{"kube-apiserver", KubeAPIServer},
		{"kube-controller-manager", KubeControllerManager},
		{"kube-scheduler", KubeScheduler},
		{"kubectl", Kubectl}, // 110 s
		{"kubernetes schemas", KubernetesSchemaLocation},
	},
	{
		{"seaweedfs", SeaweedFS}, // 475 s
		{"helm " + HelmV4Version, func(ctx context.Context) (string, error) { return Helm(ctx, HelmV4Version) }}, // 350 s
		{"kwok", KWOK}, // 335 s
		{"helm " + HelmV3Version, func(ctx context.Context) (string, error) { return Helm(ctx, HelmV3Version) }}, // 310 s
		{"etcd", Etcd},                       // 215 s
		{"cosign", Cosign},                   // 215 s
		{"registry", Registry},               // 105 s
		{"cyclonedx-gomod", CycloneDXGomod},  // 35 s
		{"flux schemas", FluxSchemaLocation}, // 30 s
		{"kubeconform", Kubeconform},         // 10 s
		{"actionlint", Actionlint},           // 5 s
		{"node ws", NodeWS},
	},
}

// Prebuild ensures every tool before `go test` starts (make tools), so that
// no test package spends its timeout building one: the first lane in order,
// then the queue, which a second worker works on from the start. Every tool
// is tried; the error joins the failures.
func Prebuild(ctx context.Context, log *slog.Logger) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	ensure := func(t prebuilt) {
		start := time.Now()
		path, err := t.ensure(ctx)
		if err != nil {
			mu.Lock()
			errs = append(errs, fmt.Errorf("%s: %w", t.name, err))
			mu.Unlock()
			log.Error("tool", "tool", t.name, "error", err)
			return
		}
		log.Info("tool", "tool", t.name, "seconds", time.Since(start).Round(100*time.Millisecond).Seconds(), "path", path)
	}
	queue := make(chan prebuilt, len(prebuildLanes[1]))
	for _, t := range prebuildLanes[1] {
		queue <- t
	}
	close(queue)
	drain := func() {
		for t := range queue {
			ensure(t)
		}
	}
	wg.Go(func() {
		for _, t := range prebuildLanes[0] {
			ensure(t)
		}
		drain()
	})
	wg.Go(drain)
	wg.Wait()
	return errors.Join(errs...)
}
