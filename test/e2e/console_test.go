package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboardgw/switchboard/pkg/connections"
)

// The web console's browser tests: headless Chromium (Debian's chromium,
// which .ci/run installs) driven over the DevTools protocol, against a
// 2-edge + router cluster with bearer tokens. CONSOLE_DOCS=1 (make
// console-docs) also writes the screenshots of docs/console.md.

const consoleToken = "e2e-console-token-5f0c1d2a9b8e7f6a"

// chromiumPath finds the browser; missing is a failure, not a skip: CI
// installs it.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: apt-get install -y chromium (.ci/run does)")
	return ""
}

// newBrowser starts headless Chromium for the test and returns a tab.
func newBrowser(t *testing.T) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); acancel() })
	// The first call starts the browser, which lives as long as its
	// context: no timeout on it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// do runs browser actions with a deadline.
func do(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if err := chromedp.Do(cctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// evaluate runs one browser action that returns a value.
func evaluate[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	v, err := chromedp.Run(cctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// waitJS polls a JavaScript condition in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	eventually(t, waitTimeout, what, func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ok, err := chromedp.Run(cctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err != nil {
			return err
		}
		if !ok {
			state, _ := chromedp.Run(cctx, chromedp.Evaluate[string](`document.querySelector("main").innerText.slice(0, 400)`))
			return fmt.Errorf("not yet; page shows: %q", state)
		}
		return nil
	})
}

// screenshot writes docs/console-<name>.png when CONSOLE_DOCS is set.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("CONSOLE_DOCS") == "" {
		return
	}
	png := evaluate(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join("..", "..", "docs", "console-"+name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestConsole(t *testing.T) {
	// Samples every 250ms: the charts have several points within the test.
	cl := startCluster(t, clusterConfig{edges: 2, routers: 1, apiToken: consoleToken,
		edgeArgs: func(int) []string { return []string{"-console-sample-interval", "250ms"} }})
	dialUser := func(edge int, user, group string, role ...string) *wsClient {
		q := "?user=" + user
		if group != "" {
			q += "&group=" + group
		}
		if len(role) > 0 {
			q += "&role=" + role[0] // $connect gives it a principal
		}
		c, err := dial(t, cl.edges[edge].wsURL()+"/"+q, edge)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// edge0: alice, carol, erin; edge1: alice, bob. The lobby: both alices
	// and bob; carol is in the helpdesk. Carol and bob have principals.
	alice0, carol, erin := dialUser(0, "alice", "lobby"), dialUser(0, "carol", "helpdesk", "support"), dialUser(0, "erin", "")
	alice1, bob := dialUser(1, "alice", "lobby"), dialUser(1, "bob", "lobby", "member")
	lobby := []*wsClient{alice0, alice1, bob}
	cl.learnIDs([]*wsClient{alice0, carol, erin, alice1, bob})

	admin := cl.edges[0].adminURL()

	// Unauthenticated: the API behind the console refuses, on the admin
	// port as on the API port.
	for _, auth := range []string{"", "Bearer wrong-token"} {
		for _, path := range []string{"/@nodes", "/@connections", "/@events", "/@users/alice/connections"} {
			req, _ := http.NewRequest(http.MethodGet, admin+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			res, err := cl.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusForbidden {
				t.Errorf("GET %s with %q: %d, want 403", path, auth, res.StatusCode)
			}
		}
	}

	ctx := newBrowser(t)
	do(t, ctx, "open console", chromedp.Navigate(admin+"/"))
	waitJS(t, ctx, "login shown", `!document.querySelector("#login").hidden && document.querySelector("#tabs").hidden`)
	do(t, ctx, "wrong token", chromedp.SetValue("#token", "wrong-token"), chromedp.Click("#login-form button"))
	waitJS(t, ctx, "wrong token refused", `document.querySelector("#login-error").textContent.includes("Refused") && document.querySelector("#nodes tbody").rows.length === 0`)

	// Cluster: both edges (and the router) with their counts.
	do(t, ctx, "sign in", chromedp.SetValue("#token", consoleToken), chromedp.Click("#login-form button"))
	nodeCount := func(i, n int) string {
		return fmt.Sprintf(`(document.querySelector('#nodes tr[data-node=%q] td.connections')||{}).textContent === "%d"`, cl.edges[i].nodeID, n)
	}
	waitJS(t, ctx, "nodes and counts", nodeCount(0, 3)+" && "+nodeCount(1, 2)+
		` && document.querySelector("#cluster-count").textContent === "5" && document.querySelectorAll("#nodes tbody tr").length === 3`+
		` && [...document.querySelectorAll("#nodes tbody tr")].some(r => r.cells[1].textContent === "router")`+
		` && [...document.querySelectorAll("#nodes tbody tr")].every(r => r.cells[1].textContent !== "edge" || / m?s$/.test(r.cells[4].textContent) && r.cells[5].textContent === "ready")`+
		` && document.querySelector("#chart-connections polyline") !== null`)
	// The charts: the chosen node's connections and messages, from its own
	// samples. A client on each edge sends some messages (no backend
	// serves them: each sender gets a no-route frame back).
	for _, c := range []*wsClient{erin, bob} {
		for i := range 10 {
			if err := c.send(fmt.Appendf(nil, `{"action":"chart","n":%d}`, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	charted := func(what string, conns int) {
		t.Helper()
		waitJS(t, ctx, what, fmt.Sprintf(`+document.querySelector("#chart-connections").dataset.last === %d`, conns)+
			fmt.Sprintf(` && document.querySelector("#chart-connections text").textContent.includes("now %d")`, conns)+
			` && document.querySelector("#chart-connections polyline").points.length >= 3`+
			` && +document.querySelector("#chart-messages").dataset.peak > 0`+
			` && document.querySelector("#chart-connects").dataset.last !== undefined`)
	}
	// The whole cluster first (the default), then one edge.
	waitJS(t, ctx, "the cluster chosen", `document.querySelector("#chart-node").selectedOptions[0].textContent === "the whole cluster"`)
	charted("the cluster's connections and messages charted", 5)
	do(t, ctx, "chart edge 1", chromedp.SetValue("#chart-node", cl.edges[1].nodeID))
	charted("edge 1's connections and messages charted", 2)
	do(t, ctx, "chart the cluster", chromedp.SetValue("#chart-node", "*"))
	charted("the cluster charted again", 5)
	screenshot(t, ctx, "cluster")

	// Connections: find carol by user, send her a message, close her with 4001.
	do(t, ctx, "search carol", chromedp.Click(`#tabs button[data-view=connections]`),
		chromedp.SetValue("#conn-by", "user"), chromedp.SetValue("#conn-q", "carol"),
		chromedp.Click("#conn-form button"))
	sel := fmt.Sprintf(`#conn-results button[data-id=%q]`, carol.id)
	waitJS(t, ctx, "carol found", fmt.Sprintf(`document.querySelector(%q) && document.querySelector("#conn-status").textContent.startsWith("1 ")`, sel))
	do(t, ctx, "open carol", chromedp.Click(sel))
	waitJS(t, ctx, "carol's details", fmt.Sprintf(`document.querySelector("#d-id").textContent === %q && document.querySelector("#d-user").textContent === "carol" && document.querySelector("#d-node").textContent === %q`,
		carol.id, cl.edges[0].nodeID)+principalAndGroups("carol", "support", "helpdesk"))
	do(t, ctx, "send to carol", chromedp.SetValue("#send-body", "hello from the console"),
		chromedp.Click("#send-form button"))
	eventually(t, waitTimeout, "carol receives the console's message", func() error {
		for _, m := range carol.messages() {
			if m.data == "hello from the console" {
				return nil
			}
		}
		return fmt.Errorf("carol has %d messages", carol.count())
	})
	waitJS(t, ctx, "send confirmed", `document.querySelector("#d-result").textContent === "sent"`)
	screenshot(t, ctx, "connections")
	do(t, ctx, "close carol", chromedp.SetValue("#close-code", "4001"), chromedp.SetValue("#close-reason", "bye from the console"),
		chromedp.Click("#close-form button"))
	eventually(t, waitTimeout, "carol closed with 4001", func() error {
		if code, reason := carol.closed(); code != 4001 || reason != "bye from the console" {
			return fmt.Errorf("close %d %q", code, reason)
		}
		return nil
	})
	waitJS(t, ctx, "carol gone from the page", fmt.Sprintf(`!document.querySelector(%q) && document.querySelector("#conn-detail").hidden`, sel))

	// A connection of the other edge by ID: its details come from its owner.
	do(t, ctx, "search bob by id", chromedp.SetValue("#conn-by", "id"), chromedp.SetValue("#conn-q", bob.id),
		chromedp.Click("#conn-form button"))
	waitJS(t, ctx, "bob's details from edge 1", fmt.Sprintf(`document.querySelector("#d-id").textContent === %q && document.querySelector("#d-node").textContent === %q`,
		bob.id, cl.edges[1].nodeID)+principalAndGroups("bob", "member", "lobby"))

	// Groups: the lobby's count and members, and a send that reaches them.
	do(t, ctx, "show lobby", chromedp.Click(`#tabs button[data-view=groups]`),
		chromedp.SetValue("#g-kind", "groups"), chromedp.SetValue("#g-name", "lobby"),
		chromedp.Click("#g-form button"))
	waitJS(t, ctx, "lobby members", `document.querySelector("#g-count").textContent === "3" && document.querySelectorAll("#g-members li").length === 3`)
	do(t, ctx, "send to lobby", chromedp.SetValue("#g-body", "to the lobby"), chromedp.Click("#g-send"))
	eventually(t, waitTimeout, "lobby members receive the group send", func() error {
		for _, c := range lobby {
			got := false
			for _, m := range c.messages() {
				got = got || m.data == "to the lobby"
			}
			if !got {
				return fmt.Errorf("%s has not received it", c.id)
			}
		}
		return nil
	})
	for _, c := range []*wsClient{erin} {
		for _, m := range c.messages() {
			if m.data == "to the lobby" {
				t.Errorf("%s, not in the lobby, received the group send", c.id)
			}
		}
	}
	waitJS(t, ctx, "group send confirmed", `document.querySelector("#g-result").textContent === "sent to group lobby"`)
	screenshot(t, ctx, "groups")

	// Events: the tail shows a new connection, its message (route traffic)
	// and its close, live.
	do(t, ctx, "start tail", chromedp.Click(`#tabs button[data-view=events]`),
		chromedp.Click("#tail-routes"), chromedp.Click("#tail-toggle"))
	waitJS(t, ctx, "tail live", `document.querySelector("#tail-status").textContent.startsWith("Live")`)
	dave := dialUser(1, "dave", "")
	cl.learnIDs([]*wsClient{dave})
	row := func(typ string) string {
		return fmt.Sprintf(`[...document.querySelectorAll("#tail tr.ev-%s")].some(r => r.cells[3].textContent === %q && r.cells[4].textContent === "dave" && r.cells[5].textContent === %q)`,
			typ, dave.id, cl.edges[1].nodeID)
	}
	waitJS(t, ctx, "dave's CONNECT in the tail", row("connect"))
	if err := dave.send([]byte(`{"action":"chat","text":"hi from dave"}`)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "dave's message in the tail", row("message")+fmt.Sprintf(` && [...document.querySelectorAll("#tail tr.ev-message")].some(r => r.cells[3].textContent === %q && r.cells[6].textContent.includes("hi from dave"))`, dave.id))
	// No backend serves "chat": the open tail of route traffic does not
	// pass for one, so dave gets API Gateway's no-route frame.
	eventually(t, waitTimeout, "dave's no-route frame", func() error {
		for _, m := range dave.messages() {
			if strings.Contains(m.data, `"message":"Forbidden"`) {
				return nil
			}
		}
		return fmt.Errorf("dave has %d messages, none the no-route frame", dave.count())
	})
	if err := dave.closeWith(1000, waitTimeout); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "dave's DISCONNECT in the tail", row("disconnect"))
	screenshot(t, ctx, "events")

	// A resumable connection whose socket is cut: its detail says detached,
	// and its resume is a row of the tail, which stays open meanwhile.
	frank := dialResume(t, cl, 1, "user=frank&resume=1")
	frank.cut(t)
	router, err := connections.New(cl.routers[0].apiURL(), connections.Options{Token: consoleToken, HTTPClient: cl.http})
	if err != nil {
		t.Fatal(err)
	}
	waitDetached(t, router, frank.id)
	do(t, ctx, "open frank", chromedp.Click(`#tabs button[data-view=connections]`),
		chromedp.SetValue("#conn-by", "id"), chromedp.SetValue("#conn-q", frank.id), chromedp.Click("#conn-form button"))
	fsel := fmt.Sprintf(`#conn-results button[data-id=%q]`, frank.id)
	waitJS(t, ctx, "frank found", fmt.Sprintf(`document.querySelector(%q)`, fsel))
	do(t, ctx, "open frank's details", chromedp.Click(fsel))
	waitJS(t, ctx, "frank's details say detached", fmt.Sprintf(`document.querySelector("#d-id").textContent === %q && document.querySelector("#d-state").textContent === "detached"`, frank.id))
	if _, err := dial(t, cl.edges[1].wsURL()+"/?"+frank.resumeQuery(), 1); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "back to the tail", chromedp.Click(`#tabs button[data-view=events]`))
	waitJS(t, ctx, "frank's RESUME in the tail", fmt.Sprintf(`[...document.querySelectorAll("#tail tr.ev-resume")].some(r => r.cells[3].textContent === %q && r.cells[4].textContent === "frank" && r.cells[5].textContent === %q && /^away \d+ ms$/.test(r.cells[6].textContent))`,
		frank.id, cl.edges[1].nodeID))
	do(t, ctx, "pause tail", chromedp.Click("#tail-toggle"))
	waitJS(t, ctx, "tail paused", `document.querySelector("#tail-status").textContent === "Paused."`)
	rows := evaluate(t, ctx, "rows", chromedp.Evaluate[int](`document.querySelectorAll("#tail tbody tr").length`))
	eve := dialUser(1, "eve", "")
	cl.learnIDs([]*wsClient{eve})
	// The tail's slot is released once the page stops reading: a new tail
	// on the API answers (the console allows 4 per node).
	eventually(t, waitTimeout, "paused tail's slot freed", func() error {
		return tailSlotsFree(cl, admin, 4)
	})
	after := evaluate(t, ctx, "rows after pause", chromedp.Evaluate[int](`document.querySelectorAll("#tail tbody tr").length`))
	if after != rows {
		t.Errorf("paused tail grew from %d to %d rows", rows, after)
	}
}

// principalAndGroups is the page condition (after &&) that the open
// connection's detail shows its groups and its principal: the authorizer
// object $connect set (principalId and the context's role).
func principalAndGroups(user, role, groups string) string {
	return fmt.Sprintf(` && document.querySelector("#d-groups").textContent === %q`+
		` && (() => { try { const p = JSON.parse(document.querySelector("#d-principal").textContent); return p.principalId === %q && p.role === %q } catch (e) { return false } })()`,
		groups, user, role)
}

// tailSlotsFree opens n tails on the API at once; each must answer 200
// with the stream open, and one more must be refused with 429.
func tailSlotsFree(cl *cluster, base string, n int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i <= n; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/@events", nil)
		req.Header.Set("Authorization", "Bearer "+consoleToken)
		res, err := cl.http.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		want := http.StatusOK
		if i == n {
			want = http.StatusTooManyRequests
		}
		if res.StatusCode != want {
			return fmt.Errorf("tail %d: %d, want %d", i+1, res.StatusCode, want)
		}
	}
	return nil
}
