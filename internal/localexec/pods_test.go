package localexec

import (
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParsePods(t *testing.T) {
	pods, err := ParsePods("default/demo:shell; team/web-0:app,sidecar\tx/y:z", "node-1")
	if err != nil {
		t.Fatal(err)
	}
	want := []Pod{
		{Namespace: "default", Name: "demo", NodeName: "node-1", Containers: []Container{{Name: "shell"}}},
		{Namespace: "team", Name: "web-0", NodeName: "node-1", Containers: []Container{{Name: "app"}, {Name: "sidecar"}}},
		{Namespace: "x", Name: "y", NodeName: "node-1", Containers: []Container{{Name: "z"}}},
	}
	if !reflect.DeepEqual(pods, want) {
		t.Fatalf("got %+v", pods)
	}
	for _, bad := range []string{
		"", " ; ", "default/demo", "demo:shell", "default/demo:", "default/demo:a,,b", "default/demo:a,a",
		"Default/demo:a", "default/de_mo:a", "default/demo:A", "default/demo:a;default/demo:b",
		"default/demo:a:b", "/demo:a", "default/:a",
	} {
		if p, err := ParsePods(bad, "n"); err == nil {
			t.Errorf("ParsePods(%q) = %+v, want an error", bad, p)
		}
	}
	if _, err := ParsePods("default/demo:a", "Bad_Node"); err == nil {
		t.Error("invalid node name accepted")
	}
}

func TestParsePodsJSON(t *testing.T) {
	pods, err := ParsePodsJSON([]byte(`[{"namespace":"default","name":"demo","containers":[
		{"name":"shell","entrypoint":["/bin/bash","-l"],"dir":"/tmp","env":["A=b"]}]},
		{"namespace":"ns","name":"p","nodeName":"other","containers":[{"name":"c"}]}]`), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if pods[0].NodeName != "node-1" || pods[1].NodeName != "other" ||
		!reflect.DeepEqual(pods[0].Containers[0], Container{Name: "shell", Entrypoint: []string{"/bin/bash", "-l"}, Dir: "/tmp", Env: []string{"A=b"}}) {
		t.Fatalf("got %+v", pods)
	}
	for _, bad := range []string{
		``, `{}`, `[]`, `[{"namespace":"a","name":"b","containers":[]}]`,
		`[{"namespace":"a","name":"b","containers":[{"name":"c"}],"extra":1}]`,
		`[{"namespace":"a","name":"b","containers":[{"name":"c","entrypoint":[""]}]}]`,
		`[{"namespace":"a","name":"b","containers":[{"name":"c","env":["NOVALUE"]}]}]`,
		`[{"namespace":"a","name":"b","containers":[{"name":"c"}]}] []`,
	} {
		if p, err := ParsePodsJSON([]byte(bad), "n"); err == nil {
			t.Errorf("ParsePodsJSON(%q) = %+v, want an error", bad, p)
		}
	}
}

func TestLoadPods(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pods.json")
	if err := os.WriteFile(file, []byte(`[{"namespace":"a","name":"b","containers":[{"name":"c"}]}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []string{file, `[{"namespace":"a","name":"b","containers":[{"name":"c"}]}]`, " a/b:c "} {
		pods, err := LoadPods(spec, "n")
		if err != nil || len(pods) != 1 || pods[0].Namespace != "a" || pods[0].Name != "b" || pods[0].Containers[0].Name != "c" || pods[0].NodeName != "n" {
			t.Errorf("LoadPods(%q) = %+v, %v", spec, pods, err)
		}
	}
	if _, err := LoadPods(filepath.Join(t.TempDir(), "missing.json"), "n"); err == nil {
		t.Error("missing file accepted")
	}
}

// checkParsedPods holds for whatever a parser accepts.
func checkParsedPods(t *testing.T, pods []Pod) {
	if len(pods) == 0 {
		t.Fatal("accepted an empty list")
	}
	seen := map[string]bool{}
	for i := range pods {
		p := &pods[i]
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted an invalid pod: %v", err)
		}
		if seen[p.Namespace+"/"+p.Name] {
			t.Fatal("accepted a duplicate pod")
		}
		seen[p.Namespace+"/"+p.Name] = true
		if _, err := p.container(p.Containers[0].Name); err != nil {
			t.Fatalf("first container not found: %v", err)
		}
		if strings.ContainsAny(p.Namespace+p.Name, "/: ;") {
			t.Fatalf("separator inside a name: %+v", p)
		}
	}
}

func FuzzParsePods(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		pods, err := ParsePods(s, "node")
		if err != nil {
			return
		}
		checkParsedPods(t, pods)
		// What was accepted prints back to an equivalent spec.
		var parts []string
		for _, p := range pods {
			var names []string
			for _, c := range p.Containers {
				names = append(names, c.Name)
			}
			parts = append(parts, p.Namespace+"/"+p.Name+":"+strings.Join(names, ","))
		}
		again, err := ParsePods(strings.Join(parts, ";"), "node")
		if err != nil || !reflect.DeepEqual(again, pods) {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
	})
}

func FuzzParsePodsJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		pods, err := ParsePodsJSON(data, "node")
		if err != nil {
			return
		}
		checkParsedPods(t, pods)
		for _, p := range pods {
			if p.NodeName == "" {
				t.Fatal("pod without a node")
			}
		}
	})
}

func FuzzAPIParams(f *testing.F) {
	f.Fuzz(func(t *testing.T, rawQuery string) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return
		}
		container, command, opts := apiParams(q)
		if container != q.Get("container") || !reflect.DeepEqual(command, q["command"]) {
			t.Fatalf("container %q command %q from %q", container, command, rawQuery)
		}
		if opts.TTY && opts.Stderr {
			t.Fatal("tty with stderr")
		}
		for name, got := range map[string]bool{"stdin": opts.Stdin, "stdout": opts.Stdout, "tty": opts.TTY} {
			v, ok := q[name]
			want := ok && len(v) > 0 && v[0] != "0" && !strings.EqualFold(v[0], "false")
			if got != want {
				t.Fatalf("%s = %v from %q", name, got, rawQuery)
			}
		}
	})
}
