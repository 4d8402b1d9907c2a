// Package localexec is a local exec backend for tests and the demo: the
// upstream kubelet streaming server (k8s.io/cri-streaming, the code kubelets
// and container runtimes serve exec with) in front of "containers" that are
// plain local processes, started with os/exec, with a real pty for tty
// sessions.
//
// A Server answers the API server's pod, exec and attach paths, so that
// client-go (and so the proxy) can talk to it as to a cluster, and the
// kubelet's /exec and /attach paths, so that a real kube-apiserver can use it
// as a node's kubelet. The wire protocols are entirely upstream's: WebSocket
// up to v4.channel.k8s.io (v5 exists only in the API server's translator) and
// SPDY v1 to v4.
//
// Every session runs its process in a session and process group of its own;
// when the process exits, or the client goes away, everything left in that
// session is killed. Attach starts the container's entrypoint afresh: a local
// "container" has no long-running main process to join.
//
// It runs arbitrary local commands for whoever can reach it: it is a test
// fixture, never part of the production binary.
package localexec

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// Config configures a Server.
type Config struct {
	Pods   []Pod
	Logger *slog.Logger // default slog.Default()

	// StreamIdleTimeout closes a stream with no traffic; default 4h, the
	// kubelet's default.
	StreamIdleTimeout time.Duration
	// StreamCreationTimeout bounds how long a SPDY client may take to open
	// its streams; default 30s as upstream.
	StreamCreationTimeout time.Duration
	// InitialSizeWait is how long a tty session waits for the client's first
	// terminal size before starting the process, so that the process starts
	// with it; default 1s; negative starts at once with 80x24.
	InitialSizeWait time.Duration
	// DrainTimeout bounds how long output is still read after the process
	// tree is gone (only a process that left its session can hold it open);
	// default 5s.
	DrainTimeout time.Duration
}

// Server is an http.Handler serving exec, attach and pod GETs for its pods.
type Server struct {
	cfg  Config
	log  *slog.Logger
	pods map[string]*Pod // "ns/name"
	mux  *http.ServeMux

	mu    sync.Mutex
	procs map[*proc]struct{}
	// streams counts the exec/attach handlers still running, so that Close
	// can wait for them: a SPDY handler waits up to StreamCreationTimeout for
	// its streams whatever its connection does, and nothing else ends it.
	streams sync.WaitGroup
	closed  bool // under mu; no stream starts after Close
}

// NewServer validates the pods and returns a Server for them.
func NewServer(cfg Config) (*Server, error) {
	if err := checkPods(cfg.Pods); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StreamIdleTimeout == 0 {
		cfg.StreamIdleTimeout = 4 * time.Hour
	}
	if cfg.StreamCreationTimeout == 0 {
		cfg.StreamCreationTimeout = remotecommand.DefaultStreamCreationTimeout
	}
	if cfg.InitialSizeWait == 0 {
		cfg.InitialSizeWait = time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger,
		pods:  map[string]*Pod{},
		mux:   http.NewServeMux(),
		procs: map[*proc]struct{}{},
	}
	for i := range cfg.Pods {
		p := cfg.Pods[i]
		p.Containers = append([]Container(nil), p.Containers...)
		s.pods[p.Namespace+"/"+p.Name] = &p
	}
	// The API server's shape.
	s.mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{pod}", s.getPod)
	s.mux.HandleFunc("/api/v1/namespaces/{ns}/pods/{pod}/exec", s.apiStream(false))
	s.mux.HandleFunc("/api/v1/namespaces/{ns}/pods/{pod}/attach", s.apiStream(true))
	// The kubelet's shape (pkg/kubelet/server), with and without the pod UID.
	s.mux.HandleFunc("/exec/{ns}/{pod}/{container}", s.kubeletStream(false))
	s.mux.HandleFunc("/exec/{ns}/{pod}/{uid}/{container}", s.kubeletStream(false))
	s.mux.HandleFunc("/attach/{ns}/{pod}/{container}", s.kubeletStream(true))
	s.mux.HandleFunc("/attach/{ns}/{pod}/{uid}/{container}", s.kubeletStream(true))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok"))
	})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{}, r.URL.Path))
	})
	return s, nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close refuses new streams, kills every process still running and waits
// for the stream handlers to return (they end as their processes do, a SPDY
// handler still waiting for its streams at StreamCreationTimeout), so that
// nothing of the Server outlives Close. The caller closes its listener or
// http.Server first: net/http does not track upgraded connections.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.killAll()
	done := make(chan struct{})
	go func() {
		s.streams.Wait()
		close(done)
	}()
	bound := s.cfg.StreamCreationTimeout + s.cfg.DrainTimeout + 5*time.Second
	select {
	case <-done:
		return nil
	case <-time.After(bound):
		return fmt.Errorf("localexec: stream handlers still running %s after Close", bound)
	}
}

func (s *Server) lookup(ns, name string) (*Pod, error) {
	p, ok := s.pods[ns+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
	}
	return p, nil
}

func (s *Server) getPod(w http.ResponseWriter, r *http.Request) {
	p, err := s.lookup(r.PathValue("ns"), r.PathValue("pod"))
	if err != nil {
		writeStatus(w, err)
		return
	}
	if prefersProtobuf(r.Header.Get("Accept")) {
		w.Header().Set("Content-Type", runtime.ContentTypeProtobuf)
		_ = podProtobuf.Encode(podObject(p), w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(podObject(p))
}

// podProtobuf encodes pods as the API server does for clients that ask
// for application/vnd.kubernetes.protobuf (its own controllers, and the
// proxy's pod lookups).
var podProtobuf = func() *protobuf.Serializer {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		panic(err)
	}
	return protobuf.NewSerializer(s, s)
}()

// prefersProtobuf reports whether protobuf comes before JSON among the
// media types of an Accept header (q-values are not weighed: client-go
// lists its preference first).
func prefersProtobuf(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		mt, _, _ := strings.Cut(part, ";")
		switch strings.TrimSpace(mt) {
		case runtime.ContentTypeProtobuf:
			return true
		case runtime.ContentTypeJSON, "application/*", "*/*":
			return false
		}
	}
	return false
}

// podUID is stable for a namespace/name, as tests may compare it.
func podUID(p *Pod) types.UID {
	h := sha256.Sum256([]byte(p.Namespace + "/" + p.Name))
	b := h[:16]
	return types.UID(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}

// podObject is what a client needs from GET pod: where the pod runs, its
// containers, and that it is running.
func podObject(p *Pod) *corev1.Pod {
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, UID: podUID(p)},
		Spec:       corev1.PodSpec{NodeName: p.NodeName},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, c := range p.Containers {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: c.Name, Image: "local", Command: c.Entrypoint, WorkingDir: c.Dir})
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Ready: true, Image: "local",
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
		})
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	return pod
}

// apiStream serves .../pods/{pod}/exec and /attach with the parameters as
// client-go sends them to the API server (stdin=true, command=..., ...),
// decoded by the same parameter codec the API server uses.
func (s *Server) apiStream(attach bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pod, ok := s.streamPod(w, r)
		if !ok {
			return
		}
		containerName, command, opts := apiParams(r.URL.Query())
		if !attach && len(command) == 0 {
			writeStatus(w, apierrors.NewBadRequest("you must specify at least one command for the container"))
			return
		}
		if attach {
			command = nil
		}
		if !opts.Stdin && !opts.Stdout && !opts.Stderr {
			writeStatus(w, apierrors.NewBadRequest("you must specify at least 1 of stdin, stdout, stderr"))
			return
		}
		s.serve(w, r, pod, containerName, command, attach, &opts)
	}
}

// streamPod checks a stream request's method and finds its pod; when it
// reports false, the refusal has been written.
func (s *Server) streamPod(w http.ResponseWriter, r *http.Request) (*Pod, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		writeStatus(w, apierrors.NewMethodNotSupported(schema.GroupResource{Resource: "pods"}, r.Method))
		return nil, false
	}
	pod, err := s.lookup(r.PathValue("ns"), r.PathValue("pod"))
	if err != nil {
		writeStatus(w, err)
		return nil, false
	}
	return pod, true
}

// apiParams reads PodExecOptions/PodAttachOptions from a query the way the
// API server's parameter conversion does: repeated command values, and
// booleans that are false only when absent, "0" or "false".
func apiParams(q url.Values) (container string, command []string, opts remotecommand.Options) {
	flag := func(name string) bool {
		v, b := q[name], false
		runtime.Convert_Slice_string_To_bool(&v, &b, nil)
		return b
	}
	opts = remotecommand.Options{Stdin: flag("stdin"), Stdout: flag("stdout"), Stderr: flag("stderr"), TTY: flag("tty")}
	if opts.TTY {
		opts.Stderr = false // a tty merges stderr into stdout, as the kubelet does
	}
	return q.Get("container"), q["command"], opts
}

// kubeletStream serves /exec/{ns}/{pod}[/{uid}]/{container} and /attach/...
// with the kubelet's parameters (input=1, output=1, error=1, tty=1), as the
// API server calls them.
func (s *Server) kubeletStream(attach bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pod, ok := s.streamPod(w, r)
		if !ok {
			return
		}
		if uid := r.PathValue("uid"); uid != "" && types.UID(uid) != podUID(pod) {
			writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, pod.Name))
			return
		}
		opts, err := remotecommand.NewOptions(r)
		if err != nil {
			writeStatus(w, apierrors.NewBadRequest(err.Error()))
			return
		}
		command := r.URL.Query()["command"]
		if !attach && len(command) == 0 {
			writeStatus(w, apierrors.NewBadRequest("you must specify at least one command for the container"))
			return
		}
		s.serve(w, r, pod, r.PathValue("container"), command, attach, opts)
	}
}

// serve resolves the container, then hands the request to the upstream
// streaming server. Every refusal happens before the upgrade.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, pod *Pod, containerName string, command []string, attach bool, opts *remotecommand.Options) {
	ctr, err := pod.container(containerName)
	if err != nil {
		switch err.(type) {
		case errNoContainer:
			writeStatus(w, &apierrors.StatusError{ErrStatus: metav1.Status{
				Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
				Message: err.Error(),
				Details: &metav1.StatusDetails{Name: pod.Name, Kind: "pods"},
			}})
		default:
			writeStatus(w, apierrors.NewBadRequest(err.Error()))
		}
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeStatus(w, apierrors.NewServiceUnavailable("the exec backend is shutting down"))
		return
	}
	s.streams.Add(1)
	s.mu.Unlock()
	defer s.streams.Done()
	// The exec's context ends when the client's connection does; see
	// hijackNotifier.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	w = &hijackNotifier{ResponseWriter: w, onClose: cancel}
	r = r.WithContext(ctx)

	run := &runner{srv: s, pod: pod, ctr: ctr}
	name, uid := pod.Name, string(podUID(pod))
	if attach {
		remotecommand.ServeAttach(w, r, run, name, uid, ctr.Name, opts,
			s.cfg.StreamIdleTimeout, s.cfg.StreamCreationTimeout, remotecommand.SupportedStreamingProtocols)
	} else {
		remotecommand.ServeExec(w, r, run, name, uid, ctr.Name, command, opts,
			s.cfg.StreamIdleTimeout, s.cfg.StreamCreationTimeout, remotecommand.SupportedStreamingProtocols)
	}
}

// writeStatus answers with a metav1.Status body, as the API server does.
func writeStatus(w http.ResponseWriter, err error) {
	var status metav1.Status
	if se, ok := err.(apierrors.APIStatus); ok {
		status = se.Status()
	} else {
		status = apierrors.NewInternalError(err).ErrStatus
	}
	status.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	if status.Code == 0 {
		status.Code = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(status.Code))
	json.NewEncoder(w).Encode(&status)
}
