package exec

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/poll"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

func TestParseTransport(t *testing.T) {
	for in, want := range map[string]Transport{
		"auto": TransportAuto, "websocket": TransportWebSocket, "spdy": TransportSPDY,
		" SPDY ": TransportSPDY, "WebSocket": TransportWebSocket,
	} {
		got, err := ParseTransport(in)
		if err != nil || got != want {
			t.Errorf("ParseTransport(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "ws", "http", "auto,spdy", "spdy2"} {
		if got, err := ParseTransport(in); err == nil {
			t.Errorf("ParseTransport(%q) = %q, want an error", in, got)
		}
	}
	if _, err := NewDialer(nil, TransportAuto); err == nil {
		t.Error("NewDialer(nil) succeeded")
	}
}

func FuzzParseTransport(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		tr, err := ParseTransport(s)
		if err != nil {
			if tr != "" {
				t.Fatalf("error with a value %q", tr)
			}
			return
		}
		if tr != TransportAuto && tr != TransportWebSocket && tr != TransportSPDY {
			t.Fatalf("ParseTransport(%q) = %q", s, tr)
		}
		if again, err := ParseTransport(string(tr)); err != nil || again != tr {
			t.Fatalf("not idempotent: %q -> %q, %v", tr, again, err)
		}
	})
}

func TestStdoutStderrSplit(t *testing.T) {
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		ctx := testenv.Context(t, 30*time.Second)
		var out, errb bytes.Buffer
		res, err := dialer(t, cfg, tr).Stream(ctx, Target{
			Namespace: "default", Pod: "demo", Container: "shell",
			Command: []string{"sh", "-c", "echo out; echo err >&2; echo out2"},
			Stdout:  true, Stderr: true,
		}, Streams{Stdout: &out, Stderr: &errb})
		if err != nil {
			t.Fatalf("Stream: %v", err)
		}
		if res.Transport != expectTransport(tr) {
			t.Errorf("transport %q, want %q", res.Transport, expectTransport(tr))
		}
		if out.String() != "out\nout2\n" || errb.String() != "err\n" {
			t.Errorf("stdout %q stderr %q", out.String(), errb.String())
		}
	})
}

func TestExitCode(t *testing.T) {
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		ctx := testenv.Context(t, 30*time.Second)
		var out bytes.Buffer
		res, err := dialer(t, cfg, tr).Stream(ctx, Target{
			Namespace: "default", Pod: "demo",
			Command: []string{"sh", "-c", "echo bye; exit 3"}, Stdout: true,
		}, Streams{Stdout: &out})
		var ce utilexec.CodeExitError
		if !errors.As(err, &ce) || ce.Code != 3 || ce.ExitStatus() != 3 {
			t.Fatalf("err = %v (%T), want exit code 3", err, err)
		}
		if out.String() != "bye\n" {
			t.Errorf("stdout %q", out.String())
		}
		if res.Transport != expectTransport(tr) {
			t.Errorf("transport %q", res.Transport)
		}
	})
}

// A process killed by a signal reports 128+signal, as container runtimes do.
func TestSignalExitCode(t *testing.T) {
	cfg, _ := backend(t)
	ctx := testenv.Context(t, 30*time.Second)
	var out bytes.Buffer
	_, err := dialer(t, cfg, TransportSPDY).Stream(ctx, Target{
		Namespace: "default", Pod: "demo", Command: []string{"sh", "-c", "kill -TERM $$"}, Stdout: true,
	}, Streams{Stdout: &out})
	var ce utilexec.CodeExitError
	if !errors.As(err, &ce) || ce.Code != 128+15 {
		t.Fatalf("err = %v, want exit code 143", err)
	}
}

func TestTTYEcho(t *testing.T) {
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		ctx := testenv.Context(t, 30*time.Second)
		inR, inW := io.Pipe()
		defer inR.Close()
		sizes := testenv.NewSizeQueue(ctx, remotecommand.TerminalSize{Width: 80, Height: 24})
		out := newSyncBuf()
		type result struct {
			res Result
			err error
		}
		done := make(chan result, 1)
		go func() {
			res, err := dialer(t, cfg, tr).Stream(ctx, Target{
				Namespace: "default", Pod: "demo",
				Command: []string{"sh", "-c", "read line; echo got:$line"},
				TTY:     true, Stdin: true, Stdout: true, Stderr: true,
			}, Streams{Stdin: inR, Stdout: out, Sizes: sizes})
			done <- result{res, err}
		}()
		go inW.Write([]byte("hello\r")) // fails once the session is over
		r := <-done
		if r.err != nil {
			t.Fatalf("Stream: %v (output %q)", r.err, out.String())
		}
		// The terminal echoes the line (with the tty's CRLF), then the
		// process answers.
		if got := out.String(); got != "hello\r\ngot:hello\r\n" {
			t.Errorf("output %q", got)
		}
		if r.res.Transport != expectTransport(tr) {
			t.Errorf("transport %q", r.res.Transport)
		}
	})
}

// The first size must be the one the process starts with (stty size runs
// before anything else), and later sizes must reach it too.
func TestResize(t *testing.T) {
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		ctx := testenv.Context(t, 30*time.Second)
		sizes := testenv.NewSizeQueue(ctx, remotecommand.TerminalSize{Width: 123, Height: 45})
		out := newSyncBuf()
		done := streamAsync(ctx, dialer(t, cfg, tr), Target{
			Namespace: "default", Pod: "demo",
			Command: []string{"sh", "-c", `stty size; while [ "$(stty size)" = "45 123" ]; do sleep 0.05; done; stty size`},
			TTY:     true, Stdout: true,
		}, Streams{Stdout: out, Sizes: sizes})
		if got, err := out.waitFor(ctx, func(s string) bool { return strings.Contains(s, "\n") }); err != nil || got != "45 123\r\n" {
			t.Fatalf("first stty size %q, %v", got, err)
		}
		sizes.Resize(remotecommand.TerminalSize{Width: 100, Height: 30})
		if err := <-done; err != nil {
			t.Fatalf("Stream: %v", err)
		}
		if got := out.String(); got != "45 123\r\n30 100\r\n" {
			t.Errorf("output %q", got)
		}
	})
}

// Closing stdin half-closes the process's stdin: cat sees EOF and exits.
// WebSocket v4 (what the forced websocket transport gets from a kubelet
// server) has no half-close, so there only the data is checked, with a
// process that stops reading by itself.
func TestStdin(t *testing.T) {
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		ctx := testenv.Context(t, 30*time.Second)
		cmd := []string{"cat"}
		if tr == TransportWebSocket {
			cmd = []string{"head", "-c", "11"}
		}
		var out bytes.Buffer
		in := strings.NewReader("line 1\nline")
		inR, inW := io.Pipe()
		go func() {
			io.Copy(inW, in)
			inW.Close()
		}()
		defer inR.Close()
		_, err := dialer(t, cfg, tr).Stream(ctx, Target{
			Namespace: "default", Pod: "demo", Command: cmd, Stdin: true, Stdout: true,
		}, Streams{Stdin: inR, Stdout: &out})
		if err != nil {
			t.Fatalf("Stream: %v", err)
		}
		want := "line 1\nline"
		if tr == TransportWebSocket {
			want = "line 1\nline"[:11]
		}
		if out.String() != want {
			t.Errorf("stdout %q, want %q", out.String(), want)
		}
	})
}

// seqWriter hashes what it is given; seq output is checked by length and
// digest against the same bytes generated here.
type seqWriter struct {
	h hash.Hash
	n int64
}

func (w *seqWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return w.h.Write(p)
}

func seqExpected(n int) (int64, []byte) {
	h := sha256.New()
	var size int64
	var buf []byte
	for i := 1; i <= n; i++ {
		buf = strconv.AppendInt(buf[:0], int64(i), 10)
		buf = append(buf, '\n')
		h.Write(buf)
		size += int64(len(buf))
	}
	return size, h.Sum(nil)
}

// kubernetes#124571: with the process exiting right after its last write,
// every byte must still arrive before Stream returns.
func TestSeqByteExact(t *testing.T) {
	const n = 2000000
	runs := 5
	if testing.Short() {
		runs = 1
	}
	wantN, wantSum := seqExpected(n)
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		d := dialer(t, cfg, tr)
		for i := range runs {
			ctx := testenv.Context(t, 60*time.Second)
			w := &seqWriter{h: sha256.New()}
			start := time.Now()
			_, err := d.Stream(ctx, Target{
				Namespace: "default", Pod: "demo", Command: []string{"seq", "1", strconv.Itoa(n)}, Stdout: true,
			}, Streams{Stdout: w})
			if err != nil {
				t.Fatalf("run %d: %v", i, err)
			}
			if w.n != wantN || !bytes.Equal(w.h.Sum(nil), wantSum) {
				t.Fatalf("run %d: got %d bytes (want %d), digest match %v", i, w.n, wantN, bytes.Equal(w.h.Sum(nil), wantSum))
			}
			t.Logf("run %d: %d bytes in %v (%.0f MiB/s)", i, w.n, time.Since(start), float64(w.n)/time.Since(start).Seconds()/(1<<20))
		}
	})
}

// Cancelling ctx ends Stream promptly and the whole process tree dies,
// background children included.
func TestCancelKillsProcess(t *testing.T) {
	cfg, srv := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		ctx, cancel := context.WithCancel(testenv.Context(t, 30*time.Second))
		out := newSyncBuf()
		done := streamAsync(ctx, dialer(t, cfg, tr), Target{
			Namespace: "default", Pod: "demo",
			Command: []string{"sh", "-c", "sleep 600 & echo $$ $!; wait"}, Stdout: true,
		}, Streams{Stdout: out})
		line, err := out.waitFor(ctx, func(s string) bool { return strings.HasSuffix(s, "\n") })
		if err != nil {
			t.Fatalf("no pids: %q %v", line, err)
		}
		var shPID, sleepPID int
		if _, err := fmt.Sscan(line, &shPID, &sleepPID); err != nil {
			t.Fatalf("pids %q: %v", line, err)
		}
		if !poll.Alive(shPID) || !poll.Alive(sleepPID) {
			t.Fatalf("processes not running before the cancel")
		}
		cancelled := time.Now()
		cancel()
		wantCanceled(t, done, 2*time.Second)
		poll.Gone(t, 2*time.Second, shPID, sleepPID)
		t.Logf("process tree gone %v after the cancel", time.Since(cancelled))
		// The backend's bookkeeping, not the test's own work.
		if err := poll.Until(context.Background(), poll.Interval, 2*time.Second, func(context.Context) error {
			if p := srv.PIDs(); len(p) > 0 {
				return fmt.Errorf("backend still tracks %v", p)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})
}

// Attach starts the container's entrypoint; stdin reaches it, and closing
// stdin ends it (SPDY). Over WebSocket v4 there is no half-close, so that
// session is ended by cancelling it.
func TestAttach(t *testing.T) {
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		ctx, cancel := context.WithCancel(testenv.Context(t, 30*time.Second))
		defer cancel()
		out := newSyncBuf()
		inR, inW := io.Pipe()
		defer inR.Close()
		done := streamAsync(ctx, dialer(t, cfg, tr), Target{
			Namespace: "team", Pod: "two", Container: "app", Stdin: true, Stdout: true,
		}, Streams{Stdin: inR, Stdout: out})
		if _, err := out.waitFor(ctx, func(s string) bool { return s == "attached to app\n" }); err != nil {
			t.Fatalf("attach output %q: %v", out.String(), err)
		}
		io.WriteString(inW, "ping\n")
		if _, err := out.waitFor(ctx, func(s string) bool { return s == "attached to app\nping\n" }); err != nil {
			t.Fatalf("attach output %q: %v", out.String(), err)
		}
		want := error(nil)
		if tr == TransportWebSocket {
			cancel()
			want = context.Canceled
		} else {
			inW.Close()
		}
		if err := <-done; !errors.Is(err, want) {
			t.Fatalf("Stream: %v, want %v", err, want)
		}
	})
}

func TestContainerEnvAndDefault(t *testing.T) {
	cfg, _ := backend(t)
	d := dialer(t, cfg, TransportAuto)
	ctx := testenv.Context(t, 30*time.Second)
	var out bytes.Buffer
	// A single-container pod needs no container name.
	if _, err := d.Stream(ctx, Target{Namespace: "default", Pod: "demo", Command: []string{"sh", "-c", "echo $HOSTNAME"}, Stdout: true}, Streams{Stdout: &out}); err != nil || out.String() != "demo\n" {
		t.Fatalf("default container: %q, %v", out.String(), err)
	}
	out.Reset()
	if _, err := d.Stream(ctx, Target{Namespace: "team", Pod: "two", Container: "side", Command: []string{"sh", "-c", "echo $GREETING"}, Stdout: true}, Streams{Stdout: &out}); err != nil || out.String() != "hi from side\n" {
		t.Fatalf("env: %q, %v", out.String(), err)
	}
	// Two containers and none named: refused.
	if _, err := d.Stream(ctx, Target{Namespace: "team", Pod: "two", Command: []string{"true"}, Stdout: true}, Streams{Stdout: &out}); err == nil || !strings.Contains(err.Error(), "container name must be specified") {
		t.Fatalf("no container on a two-container pod: %v", err)
	}
}

func TestNotFound(t *testing.T) {
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		ctx := testenv.Context(t, 30*time.Second)
		d := dialer(t, cfg, tr)
		var out bytes.Buffer
		_, err := d.Stream(ctx, Target{Namespace: "default", Pod: "nope", Command: []string{"true"}, Stdout: true}, Streams{Stdout: &out})
		if err == nil || !strings.Contains(err.Error(), `pods "nope" not found`) {
			t.Errorf("unknown pod: %v", err)
		}
		_, err = d.Stream(ctx, Target{Namespace: "default", Pod: "demo", Container: "nope", Command: []string{"true"}, Stdout: true}, Streams{Stdout: &out})
		if err == nil || !strings.Contains(err.Error(), "container nope is not valid for pod demo") {
			t.Errorf("unknown container: %v", err)
		}
	})
}

func TestGetPod(t *testing.T) {
	cfg, _ := backend(t)
	d := dialer(t, cfg, TransportAuto)
	ctx := testenv.Context(t, 30*time.Second)
	pod, err := d.GetPod(ctx, "team", "two")
	if err != nil {
		t.Fatal(err)
	}
	if pod.Namespace != "team" || pod.Name != "two" || pod.Spec.NodeName != "node-b" ||
		len(pod.Spec.Containers) != 2 || pod.Spec.Containers[1].Name != "side" || pod.Status.Phase != "Running" || pod.UID == "" {
		t.Errorf("pod %+v", pod)
	}
	if _, err := d.GetPod(ctx, "team", "missing"); !apierrors.IsNotFound(err) {
		t.Errorf("missing pod: %v, want NotFound", err)
	}
}

// Pod lookups ask for protobuf first, as the API server's own controllers
// do, and still work against a server that answers JSON; a content type the
// caller chose is kept.
func TestGetPodAsksForProtobuf(t *testing.T) {
	var mu sync.Mutex
	var accepts []string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		accepts = append(accepts, r.Header.Get("Accept"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"ns"},"spec":{"nodeName":"n"}}`)
	}))
	t.Cleanup(hs.Close)
	ctx := testenv.Context(t, 30*time.Second)
	jsonOnly := &rest.Config{Host: hs.URL}
	jsonOnly.AcceptContentTypes = "application/json"
	for _, c := range []struct {
		cfg  *rest.Config
		want string
	}{
		{&rest.Config{Host: hs.URL}, "application/vnd.kubernetes.protobuf,application/json"},
		{jsonOnly, "application/json"},
	} {
		pod, err := dialer(t, c.cfg, TransportAuto).GetPod(ctx, "ns", "p")
		if err != nil {
			t.Fatal(err)
		}
		if pod.Spec.NodeName != "n" {
			t.Errorf("pod %+v", pod)
		}
		mu.Lock()
		got := accepts[len(accepts)-1]
		mu.Unlock()
		if got != c.want {
			t.Errorf("Accept %q, want %q", got, c.want)
		}
	}
}

func TestStreamChecks(t *testing.T) {
	cfg, _ := backend(t)
	d := dialer(t, cfg, TransportAuto)
	ctx := testenv.Context(t, 30*time.Second)
	var out bytes.Buffer
	for name, c := range map[string]struct {
		t Target
		s Streams
	}{
		"no pod":            {Target{Namespace: "default", Command: []string{"true"}, Stdout: true}, Streams{Stdout: &out}},
		"no streams":        {Target{Namespace: "default", Pod: "demo", Command: []string{"true"}}, Streams{}},
		"stdin without src": {Target{Namespace: "default", Pod: "demo", Command: []string{"cat"}, Stdin: true, Stdout: true}, Streams{Stdout: &out}},
		"stdout without w":  {Target{Namespace: "default", Pod: "demo", Command: []string{"true"}, Stdout: true}, Streams{}},
		"stderr without w":  {Target{Namespace: "default", Pod: "demo", Command: []string{"true"}, Stderr: true}, Streams{}},
	} {
		if _, err := d.Stream(ctx, c.t, c.s); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// The same through a pty: the master is read until the kernel reports the
// terminal closed, and nothing buffered in it may be lost.
func TestSeqTTYByteExact(t *testing.T) {
	const n = 300000
	h := sha256.New()
	var wantN int64
	var buf []byte
	for i := 1; i <= n; i++ {
		buf = strconv.AppendInt(buf[:0], int64(i), 10)
		buf = append(buf, '\r', '\n') // the tty's onlcr
		h.Write(buf)
		wantN += int64(len(buf))
	}
	wantSum := h.Sum(nil)
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		ctx := testenv.Context(t, 60*time.Second)
		sizes := testenv.NewSizeQueue(ctx, remotecommand.TerminalSize{Width: 80, Height: 24})
		w := &seqWriter{h: sha256.New()}
		_, err := dialer(t, cfg, tr).Stream(ctx, Target{
			Namespace: "default", Pod: "demo", Command: []string{"seq", "1", strconv.Itoa(n)}, TTY: true, Stdout: true,
		}, Streams{Stdout: w, Sizes: sizes})
		if err != nil {
			t.Fatal(err)
		}
		if w.n != wantN || !bytes.Equal(w.h.Sum(nil), wantSum) {
			t.Fatalf("got %d bytes (want %d), digest match %v", w.n, wantN, bytes.Equal(w.h.Sum(nil), wantSum))
		}
	})
}

// A pod lookup that gets no answer (here: the API server holds the request
// past the client's timeout, as an overloaded one does under a burst of
// session starts) is retried a bounded number of times; an answer, even an
// error status, is returned as it came. client-go retries only a GET's
// connection reset or EOF by itself, not a timeout or a refused connection.
func TestGetPodRetriesNoAnswer(t *testing.T) {
	pod := `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"ns"},"spec":{"nodeName":"n"}}`
	release := make(chan struct{})
	var mu sync.Mutex
	requests := map[string]int{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests[r.URL.Path]++
		n := requests[r.URL.Path]
		mu.Unlock()
		name := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		switch {
		case name == "stalled" || (name == "slow" && n <= 2):
			// No answer: hold the request until the client gives up.
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		case name == "failing":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"ServiceUnavailable","code":503}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, pod)
	}))
	t.Cleanup(hs.Close)
	t.Cleanup(func() { close(release) })
	count := func(name string) int {
		mu.Lock()
		defer mu.Unlock()
		return requests["/api/v1/namespaces/ns/pods/"+name]
	}
	d := dialer(t, &rest.Config{Host: hs.URL, Timeout: 300 * time.Millisecond}, TransportAuto)
	ctx := testenv.Context(t, 30*time.Second)

	got, err := d.GetPod(ctx, "ns", "slow")
	if err != nil {
		t.Fatalf("slow: %v after %d requests, want the pod on the third", err, count("slow"))
	}
	if got.Spec.NodeName != "n" || count("slow") != 3 {
		t.Errorf("slow: pod %+v after %d requests, want node n after 3", got, count("slow"))
	}

	if _, err := d.GetPod(ctx, "ns", "failing"); !apierrors.IsServiceUnavailable(err) || count("failing") != 1 {
		t.Errorf("failing: %v after %d requests, want ServiceUnavailable after 1 (an answer is not retried)", err, count("failing"))
	}

	if _, err := d.GetPod(ctx, "ns", "stalled"); err == nil || count("stalled") != podLookupBackoff.Steps {
		t.Errorf("stalled: %v after %d requests, want an error after %d", err, count("stalled"), podLookupBackoff.Steps)
	}

	// A lookup whose caller has given up is not retried.
	done, cancel := context.WithCancel(ctx)
	cancel()
	before := count("stalled")
	if _, err := d.GetPod(done, "ns", "stalled"); !errors.Is(err, context.Canceled) || count("stalled")-before > 1 {
		t.Errorf("canceled: %v after %d requests, want context.Canceled after at most 1", err, count("stalled")-before)
	}
}

// noAnswer sorts a dial to a closed port (connection refused) as no answer
// and an API status as an answer.
func TestNoAnswer(t *testing.T) {
	ln := httptest.NewServer(http.NotFoundHandler())
	addr := ln.URL
	ln.Close()
	_, err := http.Get(addr)
	if err == nil || !noAnswer(err) {
		t.Errorf("refused dial %v: noAnswer false", err)
	}
	if noAnswer(apierrors.NewServiceUnavailable("busy")) || noAnswer(apierrors.NewTimeoutError("slow", 1)) {
		t.Error("an API status counted as no answer")
	}
}

// TestDialObserver: each transport reports exactly one accepted dial per
// session (auto's refused WebSocket attempt is not one), with a duration.
func TestDialObserver(t *testing.T) {
	cfg, _ := backend(t)
	eachTransport(t, func(t *testing.T, tr Transport) {
		var mu sync.Mutex
		var dials []time.Duration
		ctx := WithDialObserver(testenv.Context(t, 30*time.Second), func(d time.Duration) {
			mu.Lock()
			dials = append(dials, d)
			mu.Unlock()
		})
		out := newSyncBuf()
		res, err := dialer(t, cfg, tr).Stream(ctx, Target{Namespace: "default", Pod: "demo", Container: "shell",
			Command: []string{"echo", "dialed"}, Stdout: true}, Streams{Stdout: out})
		if err != nil {
			t.Fatal(err)
		}
		if res.Transport != expectTransport(tr) {
			t.Fatalf("transport %s", res.Transport)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(dials) != 1 || dials[0] <= 0 {
			t.Fatalf("observed dials %v, want exactly one positive duration", dials)
		}
	})
	// Without an observer nothing is reported and nothing breaks.
	if _, err := dialer(t, cfg, TransportAuto).Stream(testenv.Context(t, 30*time.Second), Target{Namespace: "default", Pod: "demo",
		Container: "shell", Command: []string{"true"}, Stdout: true}, Streams{Stdout: newSyncBuf()}); err != nil {
		t.Fatal(err)
	}
}
