// Package web is the demo's browser terminal: a static page with xterm.js
// and its fit add-on (vendored from npm, see assets/vendor/VERSIONS) that
// opens a session through k8s-ws-proxy. Only the demo binary links it; the
// production binary serves no web content.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"net/url"
)

//go:embed assets
var assets embed.FS

// Assets is the page's files: index.html, page.js, terminal.js (the part
// docs/browser.md shows for embedding), page.css and vendor/.
func Assets() fs.FS {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree always has assets/
	}
	return sub
}

// Handler serves the page. The page is opened as
// /?session=<ws URL of the exec>#token=<token>: the token stays in the
// fragment, which the browser never sends.
func Handler() http.Handler {
	files := http.FileServerFS(Assets())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// xterm.js's DOM renderer adds <style> elements: inline styles allowed,
		// inline scripts not.
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; frame-ancestors 'none'")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		files.ServeHTTP(w, r)
	})
}

// PageURL is the browser terminal's address for one session: the exec URL in
// the query, the token in the fragment.
func PageURL(pageOrigin, proxyBase, namespace, pod, container string, command []string, token string) string {
	q := url.Values{"container": {container}, "stdin": {"true"}, "stdout": {"true"}, "tty": {"true"}, "command": command}
	session := proxyBase + "/api/v1/namespaces/" + namespace + "/pods/" + pod + "/exec?" + q.Encode()
	return pageOrigin + "/?" + url.Values{"session": {session}}.Encode() + "#token=" + token
}
