package tests

import (
	"slices"
	"strings"
	"testing"
)

// exitNotice reaches the binary as --exit-notice; the default, auto (what
// guacd users need), is the binary's own default and renders no flag. The
// schema refuses anything but the three policies.
func TestExitNoticeValue(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		for value, want := range map[string]string{"": "", "auto": "", "never": "--exit-notice=never", "always": "--exit-notice=always"} {
			extra := slices.Clone(fullArgs)
			if value != "" {
				extra = append(extra, "--set", "exitNotice="+value)
			}
			args, _ := proxyArgs(t, h.mustRender(t, "proxy", "k8s-ws-proxy", extra...))
			var got string
			for _, a := range args {
				if strings.HasPrefix(a, "--exit-notice") {
					got = a
				}
			}
			if got != want {
				t.Errorf("exitNotice=%q: rendered %q, want %q", value, got, want)
			}
		}
		_, stderr, err := h.template(t, "proxy", "k8s-ws-proxy", append(slices.Clone(fullArgs), "--set", "exitNotice=sometimes")...)
		if err == nil || !strings.Contains(stderr, "exitNotice") {
			t.Fatalf("schema let exitNotice=sometimes through: %v %s", err, stderr)
		}
	})
}
