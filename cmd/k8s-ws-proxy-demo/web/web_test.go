package web

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestVendoredFilesMatchVersions: every vendored file is the one the
// VERSIONS list names, byte for byte, and nothing unlisted hides in vendor/.
func TestVendoredFilesMatchVersions(t *testing.T) {
	a := Assets()
	f, err := a.Open("vendor/VERSIONS")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := map[string]bool{"vendor/VERSIONS": true}
	packages := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch {
		case fields[0] == "package" && len(fields) == 3 && strings.HasPrefix(fields[2], "sha512-"):
			packages[fields[1]] = true
		case fields[0] == "file" && len(fields) == 5:
			path, want, pkg := "vendor/"+fields[1], fields[2], fields[3]
			if !packages[pkg] {
				t.Errorf("%s: package %s has no package line", path, pkg)
			}
			data, err := fs.ReadFile(a, path)
			if err != nil {
				t.Errorf("%s: %v", path, err)
				continue
			}
			sum := sha256.Sum256(data)
			if got := hex.EncodeToString(sum[:]); got != want {
				t.Errorf("%s: sha256 %s, VERSIONS says %s", path, got, want)
			}
			listed[path] = true
		default:
			t.Errorf("VERSIONS line %q is neither a package nor a file line", sc.Text())
		}
	}
	if len(packages) != 2 || !packages["@xterm/xterm@6.0.0"] || !packages["@xterm/addon-fit@0.11.0"] {
		t.Errorf("packages %v, want @xterm/xterm@6.0.0 and @xterm/addon-fit@0.11.0", packages)
	}
	err = fs.WalkDir(a, "vendor", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !listed[path] {
			t.Errorf("%s is in vendor/ but not in VERSIONS", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestHandlerServesPage(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for path, want := range map[string]string{
		"/":                              `<script src="terminal.js"></script>`,
		"/terminal.js":                   "v5.channel.k8s.io",
		"/vendor/xterm/xterm.js":         "xterm",
		"/vendor/addon-fit/addon-fit.js": "FitAddon",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: CSP %q", path, csp)
		}
	}
}
