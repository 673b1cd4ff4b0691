package main

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
)

// The page is plain HTML and JavaScript, with no build step here: the
// client library it imports (web/switchboard-client.js, which reconnects and
// resumes) is the build of clients/js, copied in by `make chat-client`.
//
//go:embed web
var webFiles embed.FS

// pageHandler serves the chat page and /config.json, which tells the page
// which gateway to connect to.
func (c *chat) pageHandler() http.Handler {
	static, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded directory is fixed at build time
	}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(static))
	// Browsers ask for /favicon.ico whatever the page says.
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "favicon.svg")
	})
	mux.HandleFunc("GET /config.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]string{"ws": c.cfg.WSURL})
	})
	return mux
}
