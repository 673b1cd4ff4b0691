package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboardgw/switchboard/internal/apptest"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// The chat page in headless Chromium (Debian's chromium, which .ci/run
// installs), its WebSocket through a proxy that plays the phone's network
// (testenv.Proxy: Down resets every connection, no close frame, and
// refuses new ones until Up): a drop loses no message, either way.

// chromium starts headless Chromium and returns a tab. A missing browser is
// a failure, not a skip: CI installs it.
func chromium(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("no chromium on PATH: apt-get install -y chromium (.ci/run does)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); acancel() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser, for the context's life
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// inPage evaluates a JavaScript expression in the tab.
func inPage[T any](ctx context.Context, expr string) (T, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(cctx, chromedp.Evaluate[T](expr))
}

// pageShows waits until the expression is true in the tab.
func pageShows(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(apptest.Deadline)
	for {
		ok, err := inPage[bool](ctx, "!!("+expr+")")
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			status, _ := inPage[string](ctx, `document.getElementById("status").textContent + " | " + document.getElementById("log").innerText`)
			t.Fatalf("%s: not true after %v (%v); page shows %q", what, apptest.Deadline, err, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func act(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, apptest.Deadline)
	defer cancel()
	if err := chromedp.Do(cctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// aliceInTheLobby starts the chat with its page behind a proxy, opens the
// page in Chromium and connects as alice to the lobby; it returns the tab,
// the proxy, the edge and alice's connection ID.
func aliceInTheLobby(t *testing.T, edgeArgs ...string) (context.Context, *testenv.Proxy, apptest.Edge, string) {
	t.Helper()
	var netw *testenv.Proxy
	ch, e := startChatVia(t, func(e apptest.Edge) string {
		netw = testenv.StartProxy(t, e.WSAddr())
		return "ws://" + netw.Addr() + "/"
	}, edgeArgs...)
	ctx := chromium(t)
	act(t, ctx, "open the page", chromedp.Navigate("http://"+ch.HTTPAddr()+"/"))
	// config.json (the gateway's URL: the proxy) is fetched as the page loads.
	pageShows(t, ctx, "config loaded", `document.body.dataset.config === "loaded"`)
	act(t, ctx, "connect as alice", chromedp.SetValue("#name", "alice"), chromedp.SetValue("#room", "lobby"),
		chromedp.Click("#connect"))
	pageShows(t, ctx, "alice in the lobby", `document.getElementById("log").innerText.includes("alice joined lobby")`)
	id, err := inPage[string](ctx, "window.chat.connectionId")
	if err != nil || id == "" {
		t.Fatalf("connection ID in the page: %q %v", id, err)
	}
	return ctx, netw, e, id
}

// Scenario: alice chats in the browser, bob from a plain client. Alice's
// network drops (her TCP connection is reset, no close frame) while bob
// sends ten messages and alice types one; when her network is back the
// page resumes the same connection: she sees bob's messages once each, in
// order, bob gets hers, and the room never saw her leave.
func TestBrowserChatLosesNothingAcrossANetworkDrop(t *testing.T) {
	ctx, netw, e, id := aliceInTheLobby(t)

	bob := apptest.Dial(t, joinURL(e, "bob", "lobby"))
	joined(t, bob, "bob", "lobby")
	say := func(text string) { apptest.Send(t, bob, fmt.Sprintf(`{"action":"send","text":%q}`, text)) }
	say("before")
	pageShows(t, ctx, "before", `document.getElementById("log").innerText.includes("bob: before")`)

	netw.Down()
	pageShows(t, ctx, "alice's page reconnecting", `window.chat.readyState === 0`)
	var want []string
	for i := 1; i <= 10; i++ {
		m := fmt.Sprintf("away %d", i)
		say(m)
		want = append(want, m)
	}
	act(t, ctx, "alice types while away", chromedp.SetValue("#say", "typed while away"), chromedp.Click("#send"))
	netw.Up()

	pageShows(t, ctx, "resumed", `document.getElementById("log").innerText.includes("nothing missed")`)
	say("after")
	pageShows(t, ctx, "after", `document.getElementById("log").innerText.includes("bob: after")`)
	log, err := inPage[string](ctx, `document.getElementById("log").innerText`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(log, "\n") {
		if text, ok := strings.CutPrefix(strings.TrimSpace(l), "[lobby] bob: "); ok {
			got = append(got, text)
		}
	}
	want = append(append([]string{"before"}, want...), "after")
	if !slices.Equal(got, want) {
		t.Fatalf("alice saw from bob %q, want %q (each once, in order)", got, want)
	}
	if strings.Contains(log, "alice left") || strings.Contains(log, "new connection") {
		t.Fatalf("the drop showed: %q", log)
	}
	if now, _ := inPage[string](ctx, "window.chat.connectionId"); now != id {
		t.Fatalf("connection ID %q after the drop, want %q (resumed)", now, id)
	}
	// Bob gets what alice typed while away, after the resume.
	for {
		f, _ := next(t, bob, "message")
		if f.From == "alice" {
			if f.Text != "typed while away" {
				t.Fatalf("bob got %q from alice", f.Text)
			}
			break
		}
	}
}

// Scenario: alice moves to the kitchen, then her network is down for longer
// than the edge's -resume-window. When it is back the page says the
// connection is new (recovered:false) and, asking $connect for the room she
// was last in, she is in the kitchen again and hears bob there.
func TestBrowserChatAwayPastTheWindowIsToldAndRejoins(t *testing.T) {
	ctx, netw, e, id := aliceInTheLobby(t, "-resume-window", "1s")
	act(t, ctx, "alice moves to the kitchen", chromedp.SetValue("#newroom", "kitchen"), chromedp.Click("#join"))
	pageShows(t, ctx, "alice in the kitchen", `document.getElementById("current").textContent === "kitchen"`)

	netw.Down()
	pageShows(t, ctx, "alice's page reconnecting", `window.chat.readyState === 0`)
	bob := apptest.Dial(t, joinURL(e, "bob", "kitchen"))
	joined(t, bob, "bob", "kitchen")
	// The window ends: her old connection is gone (its DISCONNECT tells the room).
	for {
		f, _ := next(t, bob, "left")
		if f.Name == "alice" {
			break
		}
	}
	netw.Up()

	pageShows(t, ctx, "told it is a new connection", `document.getElementById("log").innerText.includes("new connection (unknown)")`)
	joined(t, bob, "alice", "kitchen")
	apptest.Send(t, bob, `{"action":"send","text":"welcome back"}`)
	pageShows(t, ctx, "alice hears the kitchen", `document.getElementById("log").innerText.includes("[kitchen] bob: welcome back")`)
	if now, _ := inPage[string](ctx, "window.chat.connectionId"); now == id || now == "" {
		t.Fatalf("connection ID %q after the window, want a new one (was %q)", now, id)
	}
}
