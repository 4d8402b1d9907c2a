package tests

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/tools"
)

// kubeletExpand does what the kubelet does to $(VAR) references in args.
func kubeletExpand(args []string, env map[string]string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		for k, v := range env {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		out[i] = a
	}
	return out
}

// accepts reports whether the binary's own flag parser takes args: a
// trailing --help makes it stop with exit 0 after parsing everything before
// it, so unknown flags and malformed values (a bad duration) fail here.
func accepts(t *testing.T, bin string, args []string) (string, bool) {
	t.Helper()
	out, err := exec.Command(bin, append(slices.Clone(args), "--help")...).CombinedOutput()
	return string(out), err == nil
}

var helpDefault = regexp.MustCompile(`(?m)^  --([a-z0-9-]+)(?: [a-z0-9]+)?\n\s+.*?(?:\(default (.+)\))?$`)

// binaryDefaults parses `serve --help` into flag -> default value.
func binaryDefaults(t *testing.T, bin string) map[string]string {
	t.Helper()
	out, err := exec.Command(bin, "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("serve --help: %v\n%s", err, out)
	}
	defs := map[string]string{}
	for _, m := range helpDefault.FindAllStringSubmatch(string(out), -1) {
		defs[m[1]] = strings.Trim(m[2], `"`)
	}
	if len(defs) < 10 {
		t.Fatalf("parsed only %v from:\n%s", defs, out)
	}
	return defs
}

func sameValue(a, b string) bool {
	if a == b {
		return true
	}
	da, errA := time.ParseDuration(a)
	db, errB := time.ParseDuration(b)
	return errA == nil && errB == nil && da == db
}

// The DaemonSet and the hook Job pass only flags the real binary parses, and
// the chart's defaults are the binary's defaults (a chart that silently
// overrides them would make the binary's documentation wrong for every
// chart user).
func TestChartArgsParseWithTheBinary(t *testing.T) {
	checkArgsWithBinary(t, map[string][]string{
		"minimal":              minimalArgs,
		"origins and limits":   append(slices.Clone(minimalArgs), "--set", "proxy.allowedOrigins={https://a.example,https://b.example}", "--set", "proxy.maxSessions=7"),
		"resume and observers": append(slices.Clone(minimalArgs), resumeObserverSets...),
		"resume off":           append(slices.Clone(minimalArgs), "--set", "proxy.resumeWindow=0s", "--set", "proxy.observerScrollback=0"),
	})
}

// resumeObserverSets sets every resume and observer value away from its
// default, to the edges the binary accepts (64 MiB is --resume-buffer's
// largest, 16 MiB --observer-scrollback's).
var resumeObserverSets = []string{
	"--set", "proxy.resumeWindow=2m30s", "--set", "proxy.resumeBuffer=67108864",
	"--set", "proxy.observerScrollback=16777216", "--set", "proxy.observerNotice=false",
}

// The resume and observer values reach serve as the flags docs/chart.md
// names, large byte counts as integers (helm's numbers are float64: a
// naive template would print 6.7108864e+07), and the schema refuses what
// the binary would refuse at start.
func TestResumeAndObserverValues(t *testing.T) {
	h := helm{bin: helmBin(t, tools.HelmV4Version), version: tools.HelmV4Version, chart: chartPath(t)}
	for name, c := range map[string]struct {
		args []string
		want []string
	}{
		"defaults": {minimalArgs, []string{"--observer-scrollback=65536", "--observer-notice=true", "--resume-window=60s", "--resume-buffer=4194304"}},
		"set": {append(slices.Clone(minimalArgs), resumeObserverSets...),
			[]string{"--observer-scrollback=16777216", "--observer-notice=false", "--resume-window=2m30s", "--resume-buffer=67108864"}},
	} {
		t.Run(name, func(t *testing.T) {
			var ds appsv1.DaemonSet
			h.mustRender(t, "proxy", ns, c.args...).get(t, "DaemonSet", "k8s-ws-proxy").decode(t, &ds)
			args := ds.Spec.Template.Spec.Containers[0].Args
			for _, w := range c.want {
				if !slices.Contains(args, w) {
					t.Errorf("DaemonSet args lack %s: %q", w, args)
				}
			}
		})
	}
	for _, bad := range []struct{ set, want string }{
		{"proxy.resumeBuffer=65535", "resumeBuffer"},
		{"proxy.resumeBuffer=67108865", "resumeBuffer"},
		{"proxy.observerScrollback=16777217", "observerScrollback"},
		{"proxy.resumeWindow=soon", "resumeWindow"},
		{"proxy.observerNotice=maybe", "observerNotice"},
	} {
		_, stderr, err := h.template(t, "proxy", ns, append(slices.Clone(minimalArgs), "--set", bad.set)...)
		if err == nil || !strings.Contains(stderr, "schema") || !strings.Contains(stderr, bad.want) {
			t.Errorf("--set %s: err %v, want a schema error naming %s:\n%s", bad.set, err, bad.want, stderr)
		}
	}
}

// The TLS variants on their own: they need serve's --tls-cert-file,
// --tls-key-file, --client-ca-file and --client-allowed-subjects.
func TestChartTLSArgsParseWithTheBinary(t *testing.T) {
	checkArgsWithBinary(t, map[string][]string{
		"full":         fullArgs,
		"existing tls": {"-f", testdata("values-existing-tls.yaml")},
	})
}

func checkArgsWithBinary(t *testing.T, variants map[string][]string) {
	bin := filepath.Join(t.TempDir(), "k8s-ws-proxy")
	buildLikeDockerfile(t, bin, "v0.0.0-flagstest", "0000000")
	defaults := binaryDefaults(t, bin)
	h := helm{bin: helmBin(t, tools.HelmV4Version), version: tools.HelmV4Version, chart: chartPath(t)}

	for name, args := range variants {
		t.Run(name, func(t *testing.T) {
			ms := h.mustRender(t, "proxy", ns, args...)
			var ds appsv1.DaemonSet
			ms.get(t, "DaemonSet", "k8s-ws-proxy").decode(t, &ds)
			serve := kubeletExpand(ds.Spec.Template.Spec.Containers[0].Args, map[string]string{"NODE_NAME": "node-1"})
			if out, ok := accepts(t, bin, serve); !ok {
				t.Errorf("the binary rejects the DaemonSet's args %q:\n%s", serve, out)
			}
			var job batchv1.Job
			ms.get(t, "Job", "k8s-ws-proxy-bootstrap").decode(t, &job)
			if out, ok := accepts(t, bin, job.Spec.Template.Spec.Containers[0].Args); !ok {
				t.Errorf("the binary rejects the hook Job's args %q:\n%s", job.Spec.Template.Spec.Containers[0].Args, out)
			}
			if name != "minimal" {
				return
			}
			for _, a := range serve[1:] {
				k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				// The one deliberate difference: the chart denies kube-system,
				// the bare binary denies nothing (docs/chart.md).
				if k == "node-name" || (k == "denied-namespaces" && v == "kube-system") {
					continue
				}
				if d, ok := defaults[k]; !ok || !sameValue(d, v) {
					t.Errorf("chart default --%s=%s, binary default %q", k, v, d)
				}
			}
		})
	}

	// The check itself can fail: an unknown flag and a malformed value.
	for _, bad := range [][]string{{"serve", "--no-such-flag=1"}, {"serve", "--idle-timeout=soon"}, {"bootstrap-secret", "--secret=x"}} {
		if _, ok := accepts(t, bin, bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}
