package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/switchboardgw/switchboard/internal/apptest"
)

// frame is any frame the chat sends to clients.
type frame struct {
	Type    string     `json:"type"`
	Room    string     `json:"room"`
	From    string     `json:"from"`
	Text    string     `json:"text"`
	Name    string     `json:"name"`
	Message string     `json:"message"`
	Rooms   []roomInfo `json:"rooms"`
}

// startChat runs the chat backend against a real single-node gateway, as
// `go run ./cmd/edge -two-way-routes rooms` and `go run ./examples/chat` do.
func startChat(t *testing.T) (*chat, apptest.Edge) {
	t.Helper()
	return startChatVia(t, apptest.Edge.WSURL)
}

// startChatVia is startChat with the page pointed at pageWS(edge) (e.g. a
// proxy in front of the edge) instead of the edge itself, and more edge flags.
func startChatVia(t *testing.T, pageWS func(apptest.Edge) string, edgeArgs ...string) (*chat, apptest.Edge) {
	t.Helper()
	// required: a connection can only exist if the chat backend allowed it.
	e := apptest.StartEdge(t, append([]string{"-two-way-routes", "rooms", "-connect-mode", "required"}, edgeArgs...)...)
	c, err := newChat(Config{
		NATSURL:    e.NATSURL(),
		APIURL:     "http://" + e.APIAddr(),
		HTTPListen: "127.0.0.1:0",
		WSURL:      pageWS(e),
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("chat run: %v", err)
		}
	})
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("chat stopped before ready: %v", err)
	}
	return c, e
}

func joinURL(e apptest.Edge, name, room string) string {
	q := url.Values{}
	if name != "" {
		q.Set("name", name)
	}
	if room != "" {
		q.Set("room", room)
	}
	return e.WSURL() + "?" + q.Encode()
}

// next reads frames until one of type typ, returning it and the frames
// read before it.
func next(t *testing.T, c *websocket.Conn, typ string) (frame, []frame) {
	t.Helper()
	var skipped []frame
	for {
		var f frame
		apptest.ReadJSON(t, c, &f)
		if f.Type == typ {
			return f, skipped
		}
		skipped = append(skipped, f)
	}
}

// joined waits until c sees name join room.
func joined(t *testing.T, c *websocket.Conn, name, room string) {
	t.Helper()
	for {
		f, _ := next(t, c, "joined")
		if f.Name == name && f.Room == room {
			return
		}
	}
}

func TestConnectWithoutValidNameIsRefusedWith400(t *testing.T) {
	_, e := startChat(t)
	for _, u := range []string{
		joinURL(e, "", "lobby"),
		joinURL(e, "", ""),
		joinURL(e, "bad name", "lobby"),
		joinURL(e, "alice", "no.dots"),
	} {
		c, status, err := apptest.TryDial(u)
		if err == nil {
			c.CloseNow()
			t.Fatalf("%s: connected, want 400", u)
		}
		if status != http.StatusBadRequest {
			t.Fatalf("%s: status %d (%v), want 400", u, status, err)
		}
	}
}

func TestTwoClientsInARoomSeeEachOtherAndOtherRoomsDoNot(t *testing.T) {
	ch, e := startChat(t)
	alice := apptest.Dial(t, joinURL(e, "alice", "lobby"))
	joined(t, alice, "alice", "lobby")
	bob := apptest.Dial(t, joinURL(e, "bob", "")) // no room: the lobby
	joined(t, alice, "bob", "lobby")
	carol := apptest.Dial(t, joinURL(e, "carol", "kitchen"))
	joined(t, carol, "carol", "kitchen")

	apptest.Send(t, alice, `{"action":"send","text":"hello lobby"}`)
	want := frame{Type: "message", Room: "lobby", From: "alice", Text: "hello lobby"}
	for who, c := range map[string]*websocket.Conn{"bob": bob, "alice (the sender)": alice} {
		if f, _ := next(t, c, "message"); !equalFrame(f, want) {
			t.Fatalf("%s got %+v, want %+v", who, f, want)
		}
	}

	// The backend handles one route's messages in order, so by the time
	// carol's own message comes back, alice's would have reached her too if
	// carol were wrongly in the lobby.
	apptest.Send(t, carol, `{"action":"send","text":"hello kitchen"}`)
	f, before := next(t, carol, "message")
	if !equalFrame(f, frame{Type: "message", Room: "kitchen", From: "carol", Text: "hello kitchen"}) {
		t.Fatalf("carol's first message is %+v, want her own", f)
	}
	for _, b := range before {
		if b.Room != "kitchen" {
			t.Fatalf("carol (kitchen) got a frame from another room: %+v", b)
		}
	}

	// rooms is a two-way route: the backend's reply is the frame.
	apptest.Send(t, carol, `{"action":"rooms"}`)
	list, _ := next(t, carol, "rooms")
	if wantRooms := []roomInfo{{"kitchen", 1}, {"lobby", 2}}; !slices.Equal(list.Rooms, wantRooms) {
		t.Fatalf("rooms = %+v, want %+v", list.Rooms, wantRooms)
	}

	// carol moves to the lobby: the lobby hears it, and she hears the lobby.
	apptest.Send(t, carol, `{"action":"join","room":"lobby"}`)
	joined(t, bob, "carol", "lobby")
	apptest.Send(t, bob, `{"action":"send","text":"welcome carol"}`)
	if f, _ := next(t, carol, "message"); f.From != "bob" || f.Text != "welcome carol" || f.Room != "lobby" {
		t.Fatalf("carol got %+v, want bob's welcome in the lobby", f)
	}
	if rooms, _ := ch.rooms.List(context.Background()); !slices.Equal(rooms, []roomInfo{{"lobby", 3}}) {
		t.Fatalf("rooms after the move = %+v, want only the lobby with 3 (empty rooms disappear)", rooms)
	}

	// leave: carol is told, and sending without a room is an error.
	apptest.Send(t, carol, `{"action":"leave"}`)
	if f, _ := next(t, carol, "left"); f.Name != "carol" || f.Room != "lobby" {
		t.Fatalf("carol got %+v, want her own leave", f)
	}
	apptest.Send(t, carol, `{"action":"send","text":"anyone?"}`)
	if f, _ := next(t, carol, "error"); !strings.Contains(f.Message, "join a room") {
		t.Fatalf("send without a room: %+v, want an error", f)
	}
	// A bad room name: one readable sentence, not the request syntax.
	apptest.Send(t, carol, `{"action":"join","room":"no spaces"}`)
	if f, _ := next(t, carol, "error"); f.Message != "cannot join: a room name is 1-32 letters, digits, - or _" {
		t.Fatalf("join with a bad room: %+v, want the readable error", f)
	}
	// Not JSON: the gateway routes it to $default.
	apptest.Send(t, carol, `hello?`)
	if f, _ := next(t, carol, "error"); !strings.Contains(f.Message, "use join, leave, send or rooms") {
		t.Fatalf("$default: %+v, want the usage error", f)
	}

	// A closing client leaves its room ($disconnect).
	if err := bob.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("bob close: %v", err)
	}
	for {
		f, _ := next(t, alice, "left")
		if f.Name == "bob" && f.Room == "lobby" {
			break
		}
	}
}

// Rooms are gateway groups: the room's membership lives in the gateway
// (set at $connect, changed by join/leave, removed when a connection
// closes), and a room message is one call for all its members.
func TestRoomsAreGatewayGroups(t *testing.T) {
	_, e := startChat(t)
	alice := apptest.Dial(t, joinURL(e, "alice", "lobby"))
	joined(t, alice, "alice", "lobby")
	bob := apptest.Dial(t, joinURL(e, "bob", "lobby"))
	joined(t, bob, "bob", "lobby")
	count := func(room string) int {
		resp, err := http.Get("http://" + e.APIAddr() + "/@groups/" + room)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Connections int `json:"connections"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out.Connections
	}
	apptest.Eventually(t, "both in the lobby group", func() bool { return count("lobby") == 2 })
	apptest.Send(t, bob, `{"action":"join","room":"kitchen"}`)
	apptest.Eventually(t, "bob moved to the kitchen group", func() bool { return count("lobby") == 1 && count("kitchen") == 1 })
	if err := alice.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, "the closed connection left its group", func() bool { return count("lobby") == 0 })
}

func TestPageIsServedAndPointsAtTheGateway(t *testing.T) {
	ch, e := startChat(t)
	base := "http://" + ch.HTTPAddr() + "/"
	page := get(t, base)
	for _, want := range []string{"<title>Switchboard chat</title>", `import { SwitchboardSocket } from "./switchboard-client.js"`,
		"new SwitchboardSocket(", `action: "send"`, `ws.binaryType = "arraybuffer"`, `id="current"`, `rel="icon"`} {
		if !strings.Contains(page, want) {
			t.Fatalf("page lacks %q", want)
		}
	}
	// The client library the page imports is served, as a JavaScript module.
	resp, err := http.Get(base + "switchboard-client.js")
	if err != nil {
		t.Fatal(err)
	}
	lib, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/javascript") {
		t.Fatalf("switchboard-client.js: %d %q, want 200 text/javascript (browsers refuse modules of other types)", resp.StatusCode, ct)
	}
	if !strings.Contains(string(lib), "export class SwitchboardSocket") {
		t.Fatal("switchboard-client.js does not export SwitchboardSocket")
	}
	for _, icon := range []string{"favicon.svg", "favicon.ico"} {
		if got := get(t, base+icon); !strings.HasPrefix(got, "<svg") {
			t.Fatalf("%s: %q, want the SVG icon", icon, got)
		}
	}
	var cfg map[string]string
	if err := json.Unmarshal([]byte(get(t, base+"config.json")), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg["ws"] != e.WSURL() {
		t.Fatalf("config.json ws = %q, want %q", cfg["ws"], e.WSURL())
	}
}

func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
	}
	return string(body)
}

func equalFrame(a, b frame) bool {
	return a.Type == b.Type && a.Room == b.Room && a.From == b.From && a.Text == b.Text && a.Name == b.Name
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero Config: %v, want valid (defaults)", err)
	}
	for _, c := range []Config{{WSURL: "http://x/"}, {APIURL: "ftp://x"}} {
		if err := c.Validate(); err == nil {
			t.Fatalf("%+v: valid, want an error", c)
		}
	}
}
