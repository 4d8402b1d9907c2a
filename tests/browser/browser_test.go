// Package browser drives the demo's browser terminal (xterm.js, served by
// cmd/k8s-ws-proxy-demo/web) in a real headless Chromium through the real
// proxy binary and the local exec backend, with chromedp.
package browser

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/k8s-ws-proxy/k8s-ws-proxy/cmd/k8s-ws-proxy-demo/web"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/hmac"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/filewatch/filewatchtest"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/localexec"
	"github.com/k8s-ws-proxy/k8s-ws-proxy/internal/testenv"
)

var proxyBin string

func TestMain(m *testing.M) { testenv.MainWithProxy(m, &proxyBin) }

const (
	ns, pod, container, node = "team-a", "web-0", "shell", "node-1"
)

// env is the proxy in front of the local backend, the page on its own
// origin, and one headless Chromium.
type env struct {
	t       *testing.T
	proxy   *testenv.Proxy
	signer  *hmac.Signer
	page    string // the page's origin
	browser context.Context
}

func startEnv(t *testing.T) *env {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("no chromium on PATH (.ci/run installs Debian's chromium package): %v", err)
	}
	_, backendURL := testenv.StartBackend(t, localexec.Pod{Namespace: ns, Name: pod, NodeName: node,
		Containers: []localexec.Container{{Name: container, Env: []string{"PS1=$ "}}}})
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	testenv.WriteKubeconfig(t, kubeconfig, backendURL)
	key := bytes.Repeat([]byte("b"), 32)
	filewatchtest.WriteSecretDir(t, filepath.Join(dir, "keys"), map[string][]byte{"key": key})
	signer, err := hmac.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	page := httptest.NewServer(web.Handler())
	t.Cleanup(page.Close)
	proxy := testenv.StartProxy(t, testenv.ProxyOptions{Bin: proxyBin,
		Args: testenv.ServeArgs(filepath.Join(dir, "keys"), kubeconfig, node, "auto", "--allowed-origins", page.URL)})

	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(filepath.Join(dir, "chromium")),
		chromedp.WindowSize(1000, 700),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(browser); err != nil { // starts Chromium
		t.Fatalf("starting chromium: %v", err)
	}
	return &env{t: t, proxy: proxy, signer: signer, page: page.URL, browser: browser}
}

// open mints a token for a shell and opens the page for it in a new tab,
// returning once the shell's prompt shows.
func (e *env) open(query string) context.Context {
	e.t.Helper()
	c := testenv.Claims(testenv.Target{Namespace: ns, Pod: pod, Container: container, Node: node}, "/bin/sh")
	c.TTY, c.Stdin = true, true
	tok := testenv.Mint(e.t, e.signer, c)
	url := web.PageURL(e.page, "ws://"+e.proxy.Addr, ns, pod, container, []string{"/bin/sh"}, tok)
	if query != "" {
		url = strings.Replace(url, "#token=", "&"+query+"#token=", 1)
	}
	tab, cancel := chromedp.NewContext(e.browser)
	e.t.Cleanup(cancel)
	// The first run on a context opens its tab for the context's lifetime:
	// no timeout on this one.
	if err := chromedp.Do(tab); err != nil {
		e.t.Fatalf("opening a tab: %v", err)
	}
	e.run(tab, 30*time.Second, chromedp.Navigate(url))
	e.waitJS(tab, 30*time.Second, "the prompt", `/^\$/m.test(termText())`)
	return tab
}

// termJS defines termText(): the terminal buffer as text, one line a row.
const termJS = `window.termText = () => { const b = demoTerminal.buffer.active; const out = [];
  for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true)); return out.join("\n"); }; true`

func (e *env) run(tab context.Context, within time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(tab, within)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		e.t.Fatalf("chromium: %v\nterminal:\n%s", err, e.text(tab))
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](e *env, tab context.Context, expr string) T {
	e.t.Helper()
	return get(e, tab, chromedp.Evaluate[T](expr))
}

// get runs an action that returns a value.
func get[T any](e *env, tab context.Context, a chromedp.Action[T]) T {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(tab, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		e.t.Fatalf("chromium: %v\nterminal:\n%s", err, e.text(tab))
	}
	return v
}

// waitJS waits, inside the page, until the expression is true.
func (e *env) waitJS(tab context.Context, within time.Duration, what, expr string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(tab, within)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](termJS), chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(within))); err != nil {
		e.t.Fatalf("waiting for %s (%s): %v\nterminal:\n%s", what, expr, err, e.text(tab))
	}
}

// text is the terminal's buffer, for failure messages.
func (e *env) text(tab context.Context) string {
	ctx, cancel := context.WithTimeout(tab, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](termJS+`; termText()`))
	if err != nil {
		return fmt.Sprintf("(unreadable: %v)", err)
	}
	return testenv.Tail(s, 2000)
}

// typeKeys sends real key events to the focused element (xterm.js's input
// textarea), as Puppeteer types: a keyDown that carries the text, then a
// keyUp. chromedp's own sequence adds a separate char event, which xterm.js
// 6 takes as a second keystroke.
func typeKeys(s string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		for _, r := range s {
			var down, up *input.DispatchKeyEventParams
			for _, k := range kb.Encode(r) {
				switch k.Type {
				case kb.KeyDown:
					down = k
				case kb.KeyChar:
					if down != nil {
						down.Text, down.UnmodifiedText = k.Text, k.UnmodifiedText
					}
				case kb.KeyUp:
					up = k
				}
			}
			for _, k := range []*input.DispatchKeyEventParams{down, up} {
				if k == nil {
					continue
				}
				if _, err := chromedp.Call(ctx, input.DispatchKeyEvent, *k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// artifact saves data where a CI run keeps it: $ARTIFACTS_DIR if set, else
// .cache/artifacts/browser under the repository.
func artifact(t *testing.T, name string, data []byte) string {
	t.Helper()
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", ".cache", "artifacts", "browser")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path, _ := filepath.Abs(filepath.Join(dir, name))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("artifact: %s", path)
	return path
}

// TestBrowserTerminal: typed input runs, a viewport resize reaches the
// shell's terminal size, and the exit code shows when the session ends.
func TestBrowserTerminal(t *testing.T) {
	e := startEnv(t)
	tab := e.open("")

	e.run(tab, 10*time.Second, typeKeys("echo hi"+kb.Enter))
	e.waitJS(tab, 10*time.Second, "hi on a line of its own", `termText().split("\n").some(l => l.trim() === "hi")`)

	// The fit add-on sizes the terminal to the page; stty in the shell must
	// say the same, at the window's size and after the viewport shrinks.
	var sizes []string
	for i, vp := range [][2]int64{{0, 0}, {640, 360}} {
		if vp[0] > 0 {
			e.run(tab, 10*time.Second, chromedp.EmulateViewport(vp[0], vp[1]))
		}
		// Settled: the size the fit add-on proposes is the terminal's.
		e.waitJS(tab, 10*time.Second, "the terminal to fit the viewport",
			`(() => { const d = demoFit.proposeDimensions(); return d && d.rows === demoTerminal.rows && d.cols === demoTerminal.cols; })()`)
		size := eval[string](e, tab, `demoTerminal.rows + " " + demoTerminal.cols`)
		e.waitSttySize(tab, i, size)
		sizes = append(sizes, size)
	}
	if sizes[0] == sizes[1] {
		t.Fatalf("terminal size %s before and after the viewport change", sizes[0])
	}

	e.run(tab, 10*time.Second, typeKeys("exit 4"+kb.Enter))
	e.waitJS(tab, 10*time.Second, "the session end", `window.sessionEnd !== undefined`)
	exitCode := eval[int](e, tab, `sessionEnd.exitCode`)
	status := get(e, tab, chromedp.Text(chromedp.CSS("#status")))
	if exitCode != 4 || !strings.Contains(status, "exit code 4") || !strings.Contains(status, "close 1000") {
		t.Fatalf("exit code %d, status bar %q; want exit code 4 and a normal close", exitCode, status)
	}
	png := get(e, tab, chromedp.CaptureScreenshot())
	artifact(t, "terminal.png", png)
}

// waitSttySize asks the shell for its terminal size until it is size: the
// resize and the typed command travel on different channels, so the first
// answer may predate the resize. Bounded in tries.
func (e *env) waitSttySize(tab context.Context, round int, size string) {
	e.t.Helper()
	var last string
	for try := range 20 {
		marker := fmt.Sprintf("size%d-%d", round, try)
		e.run(tab, 10*time.Second, typeKeys("echo "+marker+" $(stty size)"+kb.Enter))
		e.waitJS(tab, 10*time.Second, marker, fmt.Sprintf(`termText().split("\n").some(l => l.startsWith(%q))`, marker+" "))
		last = eval[string](e, tab, fmt.Sprintf(`termText().split("\n").find(l => l.startsWith(%q)).trim()`, marker+" "))
		if last == marker+" "+size {
			return
		}
	}
	e.t.Fatalf("stty size never said %s; last %q", size, last)
}

// TestBrowserTerminalPlainWebSocket: the page's fallback for browsers
// without WebSocketStream carries a session as well.
func TestBrowserTerminalPlainWebSocket(t *testing.T) {
	e := startEnv(t)
	tab := e.open("transport=websocket")
	e.run(tab, 10*time.Second, typeKeys("echo hi-$((6*7)); exit 9"+kb.Enter))
	e.waitJS(tab, 10*time.Second, "the session end", `window.sessionEnd !== undefined && sessionEnd.exitCode === 9`)
	e.waitJS(tab, 5*time.Second, "hi-42", `termText().split("\n").some(l => l.trim() === "hi-42")`)
}

// Bounds of TestBrowserBurst, in bytes so that they hold on a loaded machine
// as on an idle one:
//   - the proxy's RSS may grow by at most burstRSSGrowthMiB over its idle
//     value while 50 MB of output stream through it (its buffering is
//     bounded per session);
//   - a keystroke typed during the burst must echo behind at most
//     echoBacklogBound bytes of output: with back-pressure only what sits in
//     the buffers between the shell and the page (pty, backend, proxy, two
//     loopback TCP sockets, the page's watermark) is ahead of the echo;
//     without it the producer runs ahead by up to the whole burst.
//   - the page's main thread must take each key event within keyBound.
//
// The times are logged: they depend on the machine.
const (
	burstBytes        = 50_000_000
	burstRSSGrowthMiB = 64
	echoBacklogBound  = 32 << 20
	keyBound          = 5 * time.Second
	// The page's own backlog: xterm.js's unparsed bytes stay under the high
	// watermark (512 KiB) plus one read; a page without back-pressure holds
	// what the network delivers faster than xterm.js parses.
	pageBacklogBound = 1 << 20
)

// TestBrowserBurst: `yes | head -c 50000000` neither freezes the page nor
// grows the proxy's memory, and keystrokes typed meanwhile echo promptly.
func TestBrowserBurst(t *testing.T) {
	e := startEnv(t)
	tab := e.open("")
	idle, err := e.proxy.RSSKiB()
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	peak := idle
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // bounded: ends with the burst
		defer close(sampled)
		wait.Until(func() {
			if kib, err := e.proxy.RSSKiB(); err == nil {
				mu.Lock()
				peak = max(peak, kib)
				mu.Unlock()
			}
		}, 50*time.Millisecond, stop)
	}()

	start := time.Now()
	e.run(tab, 10*time.Second, typeKeys(fmt.Sprintf("yes | head -c %d; echo burst-$((40+2))", burstBytes)+kb.Enter))
	e.waitJS(tab, 2*time.Minute, "the burst to start", `demoStats.outputBytes > 1000000`)

	type echo struct {
		key, echo time.Duration // the key event's dispatch; until the echo arrived
		behind    int64         // output bytes that arrived between key and echo
	}
	var echoes []echo
	for i := range 5 {
		if received := eval[int64](e, tab, `demoStats.outputBytes`); received >= burstBytes {
			break // the burst is over; later keystrokes prove nothing
		}
		// One key: the tty echoes each key where the output is at that
		// moment, so a longer marker would arrive in pieces among the "y"s.
		marker := string(rune('Q' + i))
		before := eval[[]float64](e, tab, fmt.Sprintf(`demoWatch(%q), [performance.now(), demoStats.outputBytes]`, marker))
		typed := time.Now()
		e.run(tab, 2*time.Minute, typeKeys(marker))
		key := time.Since(typed)
		e.waitJS(tab, 2*time.Minute, "the echo of "+marker, fmt.Sprintf(`demoSeen[%q] !== undefined`, marker))
		seen := eval[[]float64](e, tab, fmt.Sprintf(`[demoSeen[%q].at, demoSeen[%[1]q].bytes]`, marker))
		echoes = append(echoes, echo{key: key, echo: time.Duration((seen[0] - before[0]) * float64(time.Millisecond)), behind: int64(seen[1] - before[1])})
	}
	e.waitJS(tab, 10*time.Minute, "the end of the burst", `termText().split("\n").some(l => l.trim() === "burst-42")`)
	elapsed := time.Since(start)
	close(stop)
	<-sampled

	received := eval[int64](e, tab, `demoStats.outputBytes`)
	unparsed := eval[int64](e, tab, `demoStats.maxUnparsed`)
	t.Logf("page backlog: at most %d bytes unparsed (bound %d)", unparsed, pageBacklogBound)
	if unparsed > pageBacklogBound {
		t.Errorf("the page held up to %d unparsed bytes, bound %d: no back-pressure", unparsed, pageBacklogBound)
	}
	// The tty turns each "y\n" into "y\r\n".
	if want := int64(burstBytes) * 3 / 2; received < want {
		t.Errorf("the page received %d output bytes, want at least %d", received, want)
	}
	mu.Lock()
	growth := (peak - idle) / 1024
	mu.Unlock()
	t.Logf("50 MB burst: %v, page received %d bytes (%.1f MB/s); proxy RSS idle %d MiB, peak %d MiB (+%d MiB, bound %d)",
		elapsed.Round(time.Millisecond), received, float64(received)/elapsed.Seconds()/1e6, idle/1024, peak/1024, growth, burstRSSGrowthMiB)
	for i, ec := range echoes {
		t.Logf("keystroke %d: key event taken in %v, echo after %v behind %.1f MB of output", i, ec.key.Round(time.Millisecond), ec.echo.Round(time.Millisecond), float64(ec.behind)/1e6)
		if ec.key > keyBound {
			t.Errorf("keystroke %d: the page took %v to take the key event, bound %v", i, ec.key, keyBound)
		}
		if ec.behind > echoBacklogBound {
			t.Errorf("keystroke %d: echoed behind %d bytes of output, bound %d", i, ec.behind, echoBacklogBound)
		}
	}
	if len(echoes) < 2 {
		t.Errorf("only %d keystrokes timed during the burst (it took %v)", len(echoes), elapsed)
	}
	if growth > burstRSSGrowthMiB {
		t.Errorf("proxy RSS grew by %d MiB during the burst, bound %d MiB", growth, burstRSSGrowthMiB)
	}
	png := get(e, tab, chromedp.CaptureScreenshot())
	artifact(t, "burst.png", png)
}

// TestPageNotInProductionBinary: the page is linked into the demo only.
func TestPageNotInProductionBinary(t *testing.T) {
	demo := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", demo, "github.com/k8s-ws-proxy/k8s-ws-proxy/cmd/k8s-ws-proxy-demo").CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}
	marker := []byte("xterm-helper-textarea") // a class name inside xterm.js
	for bin, want := range map[string]bool{demo: true, proxyBin: false} {
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(data, marker); got != want {
			t.Errorf("%s contains xterm.js: %v, want %v", bin, got, want)
		}
	}
}
