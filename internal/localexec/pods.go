package localexec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultEntrypoint is what attach starts when a container names none.
var DefaultEntrypoint = []string{"/bin/sh"}

// Pod is a "pod" whose containers are local processes.
type Pod struct {
	Namespace  string      `json:"namespace"`
	Name       string      `json:"name"`
	NodeName   string      `json:"nodeName,omitempty"`
	Containers []Container `json:"containers"`
}

// Container describes how processes of one container are started.
type Container struct {
	Name string `json:"name"`
	// Entrypoint is what attach starts (a fresh process per attach: local
	// processes have no long-running main process to join). Default
	// DefaultEntrypoint.
	Entrypoint []string `json:"entrypoint,omitempty"`
	// Dir is the working directory; empty means the backend's own.
	Dir string `json:"dir,omitempty"`
	// Env is added to the minimal environment every process gets
	// (KEY=value entries; later entries win).
	Env []string `json:"env,omitempty"`
}

func (c *Container) entrypoint() []string {
	if len(c.Entrypoint) == 0 {
		return DefaultEntrypoint
	}
	return c.Entrypoint
}

// container returns the named container; an empty name selects the only
// container of a single-container pod, as the API server does.
func (p *Pod) container(name string) (*Container, error) {
	if name == "" {
		if len(p.Containers) == 1 {
			return &p.Containers[0], nil
		}
		names := make([]string, len(p.Containers))
		for i := range p.Containers {
			names[i] = p.Containers[i].Name
		}
		return nil, errContainerRequired{pod: p.Name, names: names}
	}
	for i := range p.Containers {
		if p.Containers[i].Name == name {
			return &p.Containers[i], nil
		}
	}
	return nil, errNoContainer{pod: p.Name, container: name}
}

type errContainerRequired struct {
	pod   string
	names []string
}

func (e errContainerRequired) Error() string {
	return fmt.Sprintf("a container name must be specified for pod %s, choose one of: %v", e.pod, e.names)
}

type errNoContainer struct{ pod, container string }

func (e errNoContainer) Error() string {
	return fmt.Sprintf("container %s is not valid for pod %s", e.container, e.pod)
}

// Validate checks the names the way the API server would, so that a pod
// served here could also exist in a real cluster.
func (p *Pod) Validate() error {
	if msgs := validation.IsDNS1123Label(p.Namespace); len(msgs) > 0 {
		return fmt.Errorf("namespace %q: %s", p.Namespace, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsDNS1123Subdomain(p.Name); len(msgs) > 0 {
		return fmt.Errorf("pod %q: %s", p.Name, strings.Join(msgs, "; "))
	}
	if p.NodeName != "" {
		if msgs := validation.IsDNS1123Subdomain(p.NodeName); len(msgs) > 0 {
			return fmt.Errorf("node %q: %s", p.NodeName, strings.Join(msgs, "; "))
		}
	}
	if len(p.Containers) == 0 {
		return fmt.Errorf("pod %s/%s: no containers", p.Namespace, p.Name)
	}
	seen := map[string]bool{}
	for _, c := range p.Containers {
		if msgs := validation.IsDNS1123Label(c.Name); len(msgs) > 0 {
			return fmt.Errorf("pod %s/%s: container %q: %s", p.Namespace, p.Name, c.Name, strings.Join(msgs, "; "))
		}
		if seen[c.Name] {
			return fmt.Errorf("pod %s/%s: duplicate container %q", p.Namespace, p.Name, c.Name)
		}
		seen[c.Name] = true
		for _, a := range c.Entrypoint {
			if strings.IndexByte(a, 0) >= 0 {
				return fmt.Errorf("pod %s/%s: container %q: NUL byte in entrypoint", p.Namespace, p.Name, c.Name)
			}
		}
		if len(c.Entrypoint) > 0 && c.Entrypoint[0] == "" {
			return fmt.Errorf("pod %s/%s: container %q: empty entrypoint program", p.Namespace, p.Name, c.Name)
		}
		for _, e := range c.Env {
			if k, _, ok := strings.Cut(e, "="); !ok || k == "" || strings.IndexByte(e, 0) >= 0 {
				return fmt.Errorf("pod %s/%s: container %q: env entry %q is not KEY=value", p.Namespace, p.Name, c.Name, e)
			}
		}
	}
	return nil
}

// ParsePods parses the compact pod list of the --pods flag:
//
//	ns/pod:container[,container...][;ns/pod:container...]
//
// Pods are separated by ';' or whitespace. nodeName applies to every pod.
// The containers get the default entrypoint; use JSON for more control.
func ParsePods(s, nodeName string) ([]Pod, error) {
	var pods []Pod
	fields := strings.FieldsFunc(s, func(r rune) bool {
		return r == ';' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
	for _, f := range fields {
		ref, ctrs, ok := strings.Cut(f, ":")
		if !ok || ctrs == "" {
			return nil, fmt.Errorf("pod %q: want namespace/pod:container[,container...]", f)
		}
		ns, name, ok := strings.Cut(ref, "/")
		if !ok {
			return nil, fmt.Errorf("pod %q: want namespace/pod:container[,container...]", f)
		}
		p := Pod{Namespace: ns, Name: name, NodeName: nodeName}
		for c := range strings.SplitSeq(ctrs, ",") {
			p.Containers = append(p.Containers, Container{Name: c})
		}
		pods = append(pods, p)
	}
	if err := checkPods(pods); err != nil {
		return nil, err
	}
	return pods, nil
}

// ParsePodsJSON parses a JSON array of Pod objects (field names as in the
// struct tags). A pod without nodeName gets defaultNode.
func ParsePodsJSON(data []byte, defaultNode string) ([]Pod, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var pods []Pod
	if err := dec.Decode(&pods); err != nil {
		return nil, fmt.Errorf("pods JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("pods JSON: trailing data after the array")
	}
	for i := range pods {
		if pods[i].NodeName == "" {
			pods[i].NodeName = defaultNode
		}
	}
	if err := checkPods(pods); err != nil {
		return nil, err
	}
	return pods, nil
}

// LoadPods interprets the --pods flag: a path ending in ".json" is read as a
// JSON file, a value starting with '[' is inline JSON, anything else is the
// compact form of ParsePods.
func LoadPods(spec, nodeName string) ([]Pod, error) {
	spec = strings.TrimSpace(spec)
	switch {
	case strings.HasSuffix(spec, ".json"):
		data, err := os.ReadFile(spec)
		if err != nil {
			return nil, err
		}
		return ParsePodsJSON(data, nodeName)
	case strings.HasPrefix(spec, "["):
		return ParsePodsJSON([]byte(spec), nodeName)
	default:
		return ParsePods(spec, nodeName)
	}
}

func checkPods(pods []Pod) error {
	if len(pods) == 0 {
		return errors.New("no pods given")
	}
	seen := map[string]bool{}
	for i := range pods {
		if err := pods[i].Validate(); err != nil {
			return err
		}
		k := pods[i].Namespace + "/" + pods[i].Name
		if seen[k] {
			return fmt.Errorf("pod %s given twice", k)
		}
		seen[k] = true
	}
	return nil
}
