package tests

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

func proxyArgs(t *testing.T, ms manifests) ([]string, *appsv1.DaemonSet) {
	t.Helper()
	var ds appsv1.DaemonSet
	ms.get(t, "DaemonSet", "k8s-ws-proxy").decode(t, &ds)
	return ds.Spec.Template.Spec.Containers[0].Args, &ds
}

func TestRecordingAndImpersonationOffByDefault(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		ms := h.mustRender(t, "proxy", "k8s-ws-proxy", fullArgs...)
		args, ds := proxyArgs(t, ms)
		for _, a := range args {
			if strings.HasPrefix(a, "--recording") || a == "--impersonate" {
				t.Errorf("default render has %s", a)
			}
		}
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if strings.HasPrefix(v.Name, "recording") {
				t.Errorf("default render has volume %s", v.Name)
			}
		}
		for _, m := range ms {
			if strings.HasSuffix(m.Name, "-impersonate") {
				t.Errorf("default render has %s", m.id())
			}
		}
	})
}

func TestRecordingValuesRender(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		ms := h.mustRender(t, "proxy", "k8s-ws-proxy", append(slices.Clone(fullArgs),
			"--set", "recording.mode=required", "--set", "recording.maxBytes=1048576", "--set", "recording.includeInput=true",
			"--set", "recording.spool.type=hostPath",
			"--set", "recording.upload.endpoint=https://s3.example:8333", "--set", "recording.upload.bucket=casts",
			"--set", "recording.upload.prefix=node-a", "--set", "recording.upload.credentialsSecret=s3-creds")...)
		args, ds := proxyArgs(t, ms)
		for _, want := range []string{"--recording=required", "--recording-dir=/var/lib/k8s-ws-proxy/recordings",
			"--recording-max-bytes=1048576", "--recording-include-input", "--recording-upload-url=https://s3.example:8333/casts/node-a",
			"--recording-upload-access-key-file=/etc/k8s-ws-proxy/recording-credentials/access-key",
			"--recording-upload-secret-key-file=/etc/k8s-ws-proxy/recording-credentials/secret-key"} {
			if !slices.Contains(args, want) {
				t.Errorf("args lack %s: %v", want, args)
			}
		}
		vols := map[string]bool{}
		for _, v := range ds.Spec.Template.Spec.Volumes {
			switch v.Name {
			case "recordings":
				vols[v.Name] = v.HostPath != nil && v.HostPath.Path == "/var/lib/k8s-ws-proxy/recordings"
			case "recording-credentials":
				vols[v.Name] = v.Secret != nil && v.Secret.SecretName == "s3-creds"
			}
		}
		if !vols["recordings"] || !vols["recording-credentials"] {
			t.Errorf("volumes %v", vols)
		}
	})
}

func TestRecordingUploadNeedsBucketAndSecret(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		_, stderr, err := h.template(t, "proxy", "k8s-ws-proxy", append(slices.Clone(fullArgs),
			"--set", "recording.mode=best-effort", "--set", "recording.upload.endpoint=http://s3:8333")...)
		if err == nil || !strings.Contains(stderr, "recording.upload.bucket is required") {
			t.Fatalf("rendered without a bucket: %v %s", err, stderr)
		}
		_, stderr, err = h.template(t, "proxy", "k8s-ws-proxy", append(slices.Clone(fullArgs), "--set", "recording.mode=sometimes")...)
		if err == nil || !strings.Contains(stderr, "recording") {
			t.Fatalf("schema let a bad mode through: %v %s", err, stderr)
		}
	})
}

func TestImpersonationRBACRestrictedByValues(t *testing.T) {
	forEachHelm(t, func(t *testing.T, h helm) {
		ms := h.mustRender(t, "proxy", "k8s-ws-proxy", append(slices.Clone(fullArgs),
			"--set", "impersonation.enabled=true", "--set", "impersonation.users={alice}", "--set", "impersonation.groups={devs,ops}")...)
		args, _ := proxyArgs(t, ms)
		if !slices.Contains(args, "--impersonate") {
			t.Errorf("args lack --impersonate: %v", args)
		}
		var role rbacv1.ClusterRole
		ms.get(t, "ClusterRole", "k8s-ws-proxy-impersonate").decode(t, &role)
		got := map[string][]string{}
		for _, r := range role.Rules {
			if !slices.Equal(r.Verbs, []string{"impersonate"}) {
				t.Errorf("rule %v grants more than impersonate", r)
			}
			for _, res := range r.Resources {
				got[res] = r.ResourceNames
			}
		}
		if !slices.Equal(got["users"], []string{"alice"}) || !slices.Equal(got["groups"], []string{"devs", "ops"}) {
			t.Errorf("resourceNames %v", got)
		}
		var b rbacv1.ClusterRoleBinding
		ms.get(t, "ClusterRoleBinding", "k8s-ws-proxy-impersonate").decode(t, &b)
		if b.Subjects[0].Name != "k8s-ws-proxy" || b.Subjects[0].Namespace != "k8s-ws-proxy" {
			t.Errorf("binding subjects %v", b.Subjects)
		}
	})
}
