// Package doctest runs the shell examples of README.md and docs/*.md
// against a real edge, so that every command the docs mark as tested works
// as written.
//
// A fenced sh block is run when the line before it is an HTML comment
// starting with "doctest":
//
//	<!-- doctest -->                     run against a default edge
//	<!-- doctest token want="204" -->    against an edge with an API token;
//	                                     stdout must contain 204
//	<!-- doctest frame="hi" close="4000" -->  the test's client must receive
//	                                     the text frame "hi", then be closed
//	                                     with 4000
//
// The block runs under bash -euo pipefail in a temporary directory (holding
// image.png), with the edge's real ports in place of the documented
// defaults 127.0.0.1:8080 (WebSocket) and 127.0.0.1:9090 (API), so the
// test does not need them free. ID is a live connection held by the test
// (the only one on that edge), TOKEN the token edge's API token.
package doctest

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboardgw/switchboard/internal/apptest"

	"github.com/coder/websocket"

	"github.com/switchboardgw/switchboard/internal/app"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

const token = "doctest-token-0123456789abcdef"

// block is one tested shell example.
type block struct {
	file  string
	line  int
	token bool
	want  []string
	frame string // a text frame the client must receive
	close string // the close code the client must get
	text  string
}

var marker = regexp.MustCompile(`^<!--\s*doctest\b(.*?)-->\s*$`)
var (
	wantAttr  = regexp.MustCompile(`want="([^"]*)"`)
	frameAttr = regexp.MustCompile(`frame="([^"]*)"`)
	closeAttr = regexp.MustCompile(`close="([0-9]+)"`)
)

// blocks reads the marked blocks of the docs.
func blocks(t *testing.T) []block {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []block
	for _, f := range append([]string{"../../README.md"}, files...) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		for i := 0; i+1 < len(lines); i++ {
			m := marker.FindStringSubmatch(lines[i])
			if m == nil {
				continue
			}
			if fence := strings.TrimSpace(lines[i+1]); fence != "```sh" && fence != "```bash" {
				t.Fatalf("%s:%d: a doctest marker must be followed by a ```sh block", f, i+1)
			}
			b := block{file: strings.TrimPrefix(f, "../../"), line: i + 2, token: strings.Contains(m[1], "token")}
			for _, w := range wantAttr.FindAllStringSubmatch(m[1], -1) {
				b.want = append(b.want, w[1])
			}
			if m := frameAttr.FindStringSubmatch(m[1]); m != nil {
				b.frame = m[1]
			}
			if m := closeAttr.FindStringSubmatch(m[1]); m != nil {
				b.close = m[1]
			}
			var body []string
			for i += 2; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				body = append(body, lines[i])
			}
			b.text = strings.Join(body, "\n")
			out = append(out, b)
		}
	}
	return out
}

// client is a WebSocket client holding a connection whose ID it learns
// from the edge's listing (the only connection on it).
func client(t *testing.T, e *app.Edge) (*websocket.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.WaitFor)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+e.WSAddr()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, listedID(t, e)
}

var idInListing = regexp.MustCompile(`"connectionId":"([A-Za-z0-9_-]{16})"`)

func listedID(t *testing.T, e *app.Edge) string {
	t.Helper()
	var id string
	testenv.Eventually(t, "the connection listed", func() bool {
		req, _ := http.NewRequest("GET", "http://"+e.APIAddr()+"/@connections", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		m := idInListing.FindSubmatch(body)
		if m == nil {
			return false
		}
		id = string(m[1])
		return true
	})
	return id
}

// run runs b against e with id as $ID, returning stdout.
func run(t *testing.T, b block, e *app.Edge, id string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "image.png"), []byte("\x89PNG\r\n\x1a\n\x00\xff"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer("127.0.0.1:8080", e.WSAddr(), "localhost:8080", e.WSAddr(),
		"127.0.0.1:9090", e.APIAddr(), "localhost:9090", e.APIAddr()).Replace(b.text)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "ID="+id, "TOKEN="+token)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s:%d: %v\nscript:\n%s\nstdout:\n%s\nstderr:\n%s", b.file, b.line, err, script, out, stderr.String())
	}
	for _, w := range b.want {
		if !strings.Contains(string(out), w) {
			t.Fatalf("%s:%d: stdout lacks %q:\n%s", b.file, b.line, w, out)
		}
	}
	return string(out)
}

func TestDocsShellExamplesRun(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("the docs' examples use curl: install it (Debian: apt-get install curl)")
	}
	bs := blocks(t)
	if len(bs) < 3 {
		t.Fatalf("%d tested blocks found, want the README's and the API docs' at least", len(bs))
	}
	for _, b := range bs {
		name := b.file + ":" + strconv.Itoa(b.line)
		t.Run(name, func(t *testing.T) {
			args := []string(nil)
			if b.token {
				args = []string{"-api-tokens", token}
			}
			e := apptest.StartEdge(t, args...).Edge
			c, id := client(t, e)
			got := make(chan received, 1)
			go func() { got <- readAll(c) }()
			run(t, b, e, id)
			if b.frame == "" && b.close == "" {
				return
			}
			var r received
			select {
			case r = <-got:
			case <-time.After(testenv.WaitFor):
				t.Fatalf("%s: the client was not closed", name)
			}
			if b.frame != "" && !slices.Contains(r.texts, b.frame) {
				t.Fatalf("%s: client got text frames %q and %d binary, want %q as text", name, r.texts, r.binary, b.frame)
			}
			if b.close != "" && strconv.Itoa(int(r.code)) != b.close {
				t.Fatalf("%s: client closed with %d (%v), want %s", name, r.code, r.err, b.close)
			}
		})
	}
}

// received is what a client read until its connection ended.
type received struct {
	texts  []string
	binary int
	code   websocket.StatusCode
	err    error
}

func readAll(c *websocket.Conn) received {
	var r received
	for {
		typ, data, err := c.Read(context.Background())
		if err != nil {
			r.code, r.err = websocket.CloseStatus(err), err
			return r
		}
		if typ == websocket.MessageText {
			r.texts = append(r.texts, string(data))
		} else {
			r.binary++
		}
	}
}
