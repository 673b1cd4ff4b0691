package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/nats-io/nats.go"
)

// permessage-deflate with the browser as the client: headless Chromium
// offers the extension on every WebSocket and compresses what it sends.
// The edge process runs with -compression; a small echo backend in this
// test posts every client message back through the @connections API, so a
// round trip is browser → edge (inflate) → NATS → backend → API → edge
// (compress) → browser. What went compressed is read from the edge's
// metrics.

const compressionMaxMessage = 64 << 10

// echoBackend posts every MESSAGE event's body back to its connection.
func echoBackend(t *testing.T, cl *cluster) {
	nc, err := nats.Connect(cl.natsURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	api := cl.edges[0].apiURL()
	_, err = nc.Subscribe(prefix+".route.>", func(m *nats.Msg) {
		var ev event
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		res, err := cl.http.Post(api+"/@connections/"+url.PathEscape(ev.RequestContext.ConnectionID), "text/plain", strings.NewReader(ev.Body))
		if err == nil {
			res.Body.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// compressionBytes reads switchboard_compression_<kind>_bytes_total for a
// direction from the edge's metrics.
func compressionBytes(t *testing.T, cl *cluster, kind, dir string) float64 {
	t.Helper()
	body, err := httpGet(context.Background(), cl.edges[0].adminURL()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^switchboard_compression_` + kind + `_bytes_total\{direction="` + dir + `"\} (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no switchboard_compression_%s_bytes_total{direction=%q} in the edge's metrics", kind, dir)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// jsonDoc is a JSON document of about n bytes.
func jsonDoc(n int) string {
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"user":"alice","text":"hello, world"}`, i)
	}
	b.WriteString("]}")
	return b.String()
}

// goMember is a Go client (gobwas/ws) that reads whole frames, to see
// which came compressed.
type goMember struct {
	hs ws.Handshake
	br *bufio.Reader
	c  interface {
		io.Closer
		SetReadDeadline(time.Time) error
	}
}

func dialGoMember(t *testing.T, wsURL string, offer bool) *goMember {
	t.Helper()
	var d ws.Dialer
	if offer {
		d.Extensions = []httphead.Option{wsflate.DefaultParameters.Option()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	nc, br, hs, err := d.Dial(ctx, wsURL+"/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if br == nil {
		br = bufio.NewReader(nc)
	}
	return &goMember{hs: hs, br: br, c: nc}
}

func (m *goMember) next(t *testing.T) (payload string, compressed bool) {
	t.Helper()
	_ = m.c.SetReadDeadline(time.Now().Add(waitTimeout))
	f, err := ws.ReadFrame(m.br)
	if err != nil {
		t.Fatal(err)
	}
	if compressed, _ = wsflate.IsCompressed(f.Header); compressed {
		if f, err = wsflate.DecompressFrame(f); err != nil {
			t.Fatal(err)
		}
	}
	return string(f.Payload), compressed
}

// runJS runs statements in the page.
func runJS(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	evaluate(t, ctx, what, chromedp.Evaluate[bool]("(() => {"+js+"; return true })()"))
}

func TestCompressionWithChromium(t *testing.T) {
	cl := startCluster(t, clusterConfig{edges: 1, routers: 1, edgeArgs: func(int) []string {
		return []string{"-compression", "-max-message-bytes", strconv.Itoa(compressionMaxMessage)}
	}})
	echoBackend(t, cl)
	ctx := newBrowser(t)
	// A page from a loopback origin: Chromium keeps pages of other origins
	// (about:blank's is opaque) from opening sockets to loopback.
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "<!doctype html><title>compression</title>")
	}))
	t.Cleanup(page.Close)
	do(t, ctx, "open a page", chromedp.Navigate(page.URL))
	wsURL := cl.edges[0].wsURL()
	// Two browser sockets: one to round trip and be bombed from, one
	// neighbour. Each records what it receives and how it closed.
	runJS(t, ctx, "open WebSockets", `
		window.socks = {};
		for (const name of ["main", "neighbour"]) {
			const s = new WebSocket(`+strconv.Quote(wsURL+"/")+`);
			s.got = []; s.closed = null;
			s.onmessage = (e) => s.got.push(e.data);
			s.onclose = (e) => (s.closed = e.code);
			window.socks[name] = s;
		}`)
	waitJS(t, ctx, "both sockets open", `Object.values(window.socks).every((s) => s.readyState === 1)`)

	// Negotiated, with no context takeover either way.
	ext := evaluate(t, ctx, "extensions", chromedp.Evaluate[string](`window.socks.main.extensions`))
	for _, want := range []string{"permessage-deflate", "server_no_context_takeover", "client_no_context_takeover"} {
		if !strings.Contains(ext, want) {
			t.Fatalf("the browser's negotiated extensions %q lack %s", ext, want)
		}
	}

	// A round trip: the browser's message arrives compressed, is inflated,
	// and the post back goes out compressed.
	doc := jsonDoc(8 << 10)
	in0, inZ0 := compressionBytes(t, cl, "plain", "in"), compressionBytes(t, cl, "compressed", "in")
	out0, outZ0 := compressionBytes(t, cl, "plain", "out"), compressionBytes(t, cl, "compressed", "out")
	runJS(t, ctx, "send", `window.socks.main.send(`+strconv.Quote(doc)+`)`)
	waitJS(t, ctx, "the echo", `window.socks.main.got.length === 1`)
	if got := evaluate(t, ctx, "echo", chromedp.Evaluate[string](`window.socks.main.got[0]`)); got != doc {
		t.Fatalf("echo: %d bytes, want the %d sent", len(got), len(doc))
	}
	in, inZ := compressionBytes(t, cl, "plain", "in")-in0, compressionBytes(t, cl, "compressed", "in")-inZ0
	out, outZ := compressionBytes(t, cl, "plain", "out")-out0, compressionBytes(t, cl, "compressed", "out")-outZ0
	if in != float64(len(doc)) || inZ <= 0 || inZ > in/3 {
		t.Errorf("from the browser: %v bytes inflated from %v, want %d from well under a third", in, inZ, len(doc))
	}
	if out != float64(len(doc)) || outZ <= 0 || outZ > out/3 {
		t.Errorf("to the browser: %v bytes compressed to %v, want %d to well under a third", out, outZ, len(doc))
	}

	// Fan-out to mixed members: the browser, a Go client that negotiated
	// the extension and one that did not get the same payload; the node
	// compressed it once.
	zipped, plain := dialGoMember(t, wsURL, true), dialGoMember(t, wsURL, false)
	if len(zipped.hs.Extensions) != 1 || len(plain.hs.Extensions) != 0 {
		t.Fatalf("negotiated extensions: %v and %v, want permessage-deflate and none", zipped.hs.Extensions, plain.hs.Extensions)
	}
	eventually(t, waitTimeout, "four connections", func() error {
		body, err := httpGet(context.Background(), cl.edges[0].adminURL()+"/metrics")
		if err != nil {
			return err
		}
		if !strings.Contains(body, "\nswitchboard_connections 4\n") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	msg := jsonDoc(2 << 10)
	out0 = compressionBytes(t, cl, "plain", "out")
	res, err := cl.http.Post(cl.edges[0].apiURL()+"/@broadcast", "text/plain", strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("broadcast: %d", res.StatusCode)
	}
	if got, compressed := zipped.next(t); got != msg || !compressed {
		t.Fatalf("Go member with the extension: %d bytes, compressed %v", len(got), compressed)
	}
	if got, compressed := plain.next(t); got != msg || compressed {
		t.Fatalf("Go member without it: %d bytes, compressed %v", len(got), compressed)
	}
	waitJS(t, ctx, "the broadcast in the browser", `window.socks.main.got.length === 2 && window.socks.neighbour.got.length === 1`)
	for _, name := range []string{"main", "neighbour"} {
		got := evaluate(t, ctx, "broadcast", chromedp.Evaluate[string](`window.socks.`+name+`.got.at(-1)`))
		if got != msg {
			t.Fatalf("browser socket %s: broadcast of %d bytes, want %d", name, len(got), len(msg))
		}
	}
	if n := compressionBytes(t, cl, "plain", "out") - out0; n != float64(len(msg)) {
		t.Fatalf("the node compressed %v bytes for three members that negotiated, want %d (once)", n, len(msg))
	}

	// A decompression bomb from the browser: 16 MiB of spaces compress to
	// about 16 KiB, far over -max-message-bytes inflated. 1009, and the
	// neighbour still round trips.
	in0 = compressionBytes(t, cl, "plain", "in")
	runJS(t, ctx, "send a bomb", `window.socks.main.send(" ".repeat(16 << 20))`)
	waitJS(t, ctx, "the bomb closed", `window.socks.main.closed !== null`)
	if code := evaluate(t, ctx, "close code", chromedp.Evaluate[int](`window.socks.main.closed`)); code != 1009 {
		t.Fatalf("bomb: close %d, want 1009", code)
	}
	if n := compressionBytes(t, cl, "plain", "in") - in0; n > compressionMaxMessage+1 {
		t.Fatalf("inflated %v bytes of the bomb, want at most the limit %d + 1", n, compressionMaxMessage)
	}
	small := jsonDoc(1 << 10)
	runJS(t, ctx, "neighbour sends", `window.socks.neighbour.send(`+strconv.Quote(small)+`)`)
	waitJS(t, ctx, "the neighbour's echo", `window.socks.neighbour.got.length === 2`)
	if got := evaluate(t, ctx, "neighbour echo", chromedp.Evaluate[string](`window.socks.neighbour.got[1]`)); !bytes.Equal([]byte(got), []byte(small)) {
		t.Fatalf("neighbour's echo: %d bytes, want %d", len(got), len(small))
	}
}
