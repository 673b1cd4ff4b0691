package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/pkg/backend"
	"github.com/switchboardgw/switchboard/pkg/connections"
)

// Config configures the chat backend. The zero value is valid: it talks to a
// gateway started with `go run ./cmd/edge` on this machine.
type Config struct {
	// NATSURL is the gateway's NATS server. Default "nats://127.0.0.1:4223"
	// (the edge's embedded server).
	NATSURL string
	// Prefix is the gateway's NATS subject prefix. Default "switchboard".
	Prefix string
	// APIURL is the @connections API endpoint. Default "http://127.0.0.1:9090".
	APIURL string
	// APIToken is the API's bearer token. Default "" (none: the single-node
	// gateway's API accepts loopback callers without one).
	APIToken string
	// HTTPListen is where the chat page is served. Default "127.0.0.1:8000".
	HTTPListen string
	// WSURL is the gateway URL the page's WebSocket connects to. Default
	// "ws://127.0.0.1:8080/".
	WSURL string
}

func (c *Config) setDefaults() {
	if c.NATSURL == "" {
		c.NATSURL = "nats://127.0.0.1:4223"
	}
	if c.Prefix == "" {
		c.Prefix = "switchboard"
	}
	if c.APIURL == "" {
		c.APIURL = "http://127.0.0.1:9090"
	}
	if c.HTTPListen == "" {
		c.HTTPListen = "127.0.0.1:8000"
	}
	if c.WSURL == "" {
		c.WSURL = "ws://127.0.0.1:8080/"
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if u, err := url.Parse(c.WSURL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		errs = append(errs, fmt.Errorf("ws url %q: want ws(s)://host[:port]/path", c.WSURL))
	}
	if _, err := connections.New(c.APIURL, connections.Options{}); err != nil {
		errs = append(errs, fmt.Errorf("api url: %w", err))
	}
	return errors.Join(errs...)
}

// Limits of what clients may send: the names and rooms end up in HTML and
// in user IDs, so they are kept to a plain alphabet.
const (
	maxNameLen  = 32
	maxTextLen  = 4096
	defaultRoom = "lobby"
	// broadcastTimeout bounds one fan-out to a room.
	broadcastTimeout = 10 * time.Second
)

// chat is the chat backend: the $connect decision, the routes join, leave,
// send and rooms, and the page. Build it with newChat, then Run it once.
type chat struct {
	cfg   Config
	log   *slog.Logger
	nc    *nats.Conn
	api   *connections.Client
	rooms rooms
	b     *backend.Backend
	ln    net.Listener
	srv   *http.Server
	ready chan struct{}
}

// newChat connects to NATS, registers the handlers and binds the page's
// listener. Nothing is served until Run, which also releases everything.
func newChat(cfg Config, log *slog.Logger) (_ *chat, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	c := &chat{cfg: cfg, log: log, rooms: newMemRooms(), ready: make(chan struct{})}
	if c.api, err = connections.New(cfg.APIURL, connections.Options{Token: cfg.APIToken}); err != nil {
		return nil, err
	}
	// Reconnect forever: the gateway may start after the backend, or restart.
	c.nc, err = nats.Connect(cfg.NATSURL, nats.Name("switchboard-example-chat"),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("nats %s: %w", cfg.NATSURL, err)
	}
	defer func() {
		if err != nil {
			c.nc.Close()
		}
	}()
	if c.b, err = backend.New(c.nc, backend.Options{Prefix: cfg.Prefix, Logger: log}); err != nil {
		return nil, err
	}
	c.b.OnConnect(c.onConnect)
	c.b.OnConnected(c.onConnected)
	c.b.OnDisconnect(c.onDisconnect)
	c.b.Route("join", c.onJoin)
	c.b.Route("leave", c.onLeave)
	c.b.Route("send", c.onSend)
	c.b.Route("rooms", c.onRooms)
	c.b.Default(c.onDefault)

	if c.ln, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		return nil, fmt.Errorf("chat page: %w", err)
	}
	c.srv = &http.Server{Handler: c.pageHandler(), ReadHeaderTimeout: 10 * time.Second}
	return c, nil
}

// HTTPAddr is the page's listen address.
func (c *chat) HTTPAddr() string { return c.ln.Addr().String() }

// Ready is closed once the backend's subscriptions are in place.
func (c *chat) Ready() <-chan struct{} { return c.ready }

// Run serves until ctx ends, then stops the page, drains the handlers and
// closes the NATS connection.
func (c *chat) Run(ctx context.Context) error {
	defer c.nc.Close()
	if err := c.b.Start(ctx); err != nil {
		c.ln.Close()
		return fmt.Errorf("chat backend: %w", err)
	}
	close(c.ready)
	c.log.Info("chat: ready", "nats", c.cfg.NATSURL, "api", c.cfg.APIURL, "page", "http://"+c.HTTPAddr()+"/")

	var wg sync.WaitGroup
	serveErr := make(chan error, 1)
	wg.Go(func() {
		if err := c.srv.Serve(c.ln); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("chat page: %w", err)
		}
	})
	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = errors.Join(err, c.srv.Shutdown(sctx))
	wg.Wait()
	return errors.Join(err, c.b.Drain())
}

// Frames sent to clients: JSON objects told apart by "type".
type (
	chatMessage struct {
		Type string `json:"type"` // "message"
		Room string `json:"room"`
		From string `json:"from"`
		Text string `json:"text"`
	}
	presence struct {
		Type string `json:"type"` // "joined" or "left"
		Room string `json:"room"`
		Name string `json:"name"`
	}
	roomList struct {
		Type  string     `json:"type"` // "rooms"
		Rooms []roomInfo `json:"rooms"`
	}
	errorFrame struct {
		Type    string `json:"type"` // "error"
		Message string `json:"message"`
	}
)

// request is what clients send; "action" selects the route at the gateway.
type request struct {
	Action string `json:"action"`
	Room   string `json:"room"`
	Text   string `json:"text"`
}

// validName: 1–32 letters, digits, '-' or '_'. Legal as a gateway user ID
// and group name, and harmless in HTML.
func validName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// onConnect decides $connect: ?name= is required and becomes the user ID;
// ?room= (default lobby) is joined right away, so the client's first
// message already reaches its room.
func (c *chat) onConnect(ctx context.Context, r *backend.ConnectRequest) backend.ConnectResponse {
	name := r.QueryStringParameters["name"]
	if name == "" {
		return backend.Deny(http.StatusBadRequest, "name is required: connect with ?name=you&room=lobby")
	}
	if !validName(name) {
		return backend.Deny(http.StatusBadRequest, "name: 1-32 letters, digits, - or _")
	}
	room := r.QueryStringParameters["room"]
	if room == "" {
		room = defaultRoom
	}
	if !validName(room) {
		return backend.Deny(http.StatusBadRequest, "room: 1-32 letters, digits, - or _")
	}
	// If the upgrade fails after this, the stale member is dropped on the
	// first post that answers 410.
	if _, err := c.rooms.Join(ctx, room, r.ConnectionID()); err != nil {
		c.log.Error("chat: join on connect", "err", err)
		return backend.Deny(http.StatusInternalServerError, "")
	}
	// The gateway puts the connection in the room's group as it connects:
	// messages to the room reach it from the first frame.
	return backend.ConnectResponse{UserID: name, Groups: []string{room}}
}

// onConnected announces the new member to its room (itself included, which
// tells the page the connection is in).
func (c *chat) onConnected(ctx context.Context, e *backend.Event) {
	room, err := c.rooms.RoomOf(ctx, e.ConnectionID())
	if err != nil || room == "" {
		return
	}
	c.broadcast(ctx, room, presence{Type: "joined", Room: room, Name: e.Switchboard.UserID})
}

func (c *chat) onDisconnect(ctx context.Context, e *backend.Event) {
	room, err := c.rooms.Leave(ctx, e.ConnectionID())
	if err != nil || room == "" {
		return
	}
	c.broadcast(ctx, room, presence{Type: "left", Room: room, Name: e.Switchboard.UserID})
}

func (c *chat) onJoin(ctx context.Context, m *backend.Message) ([]byte, error) {
	var req request
	if json.Unmarshal(m.Data, &req) != nil || !validName(req.Room) {
		c.tell(ctx, m.ConnectionID(), errorFrame{Type: "error", Message: "cannot join: a room name is 1-32 letters, digits, - or _"})
		return nil, nil
	}
	left, err := c.rooms.Join(ctx, req.Room, m.ConnectionID())
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if err := c.api.AddToGroup(ctx, req.Room, m.ConnectionID()); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if left != "" {
		if err := c.api.RemoveFromGroup(ctx, left, m.ConnectionID()); err != nil {
			return nil, fmt.Errorf("join: leave %s: %w", left, err)
		}
	}
	name := m.Switchboard.UserID
	if left != "" {
		c.broadcast(ctx, left, presence{Type: "left", Room: left, Name: name})
	}
	c.broadcast(ctx, req.Room, presence{Type: "joined", Room: req.Room, Name: name})
	return nil, nil
}

func (c *chat) onLeave(ctx context.Context, m *backend.Message) ([]byte, error) {
	left, err := c.rooms.Leave(ctx, m.ConnectionID())
	if err != nil {
		return nil, fmt.Errorf("leave: %w", err)
	}
	if left == "" {
		c.tell(ctx, m.ConnectionID(), errorFrame{Type: "error", Message: "cannot leave: you are not in a room"})
		return nil, nil
	}
	if err := c.api.RemoveFromGroup(ctx, left, m.ConnectionID()); err != nil {
		return nil, fmt.Errorf("leave: %w", err)
	}
	p := presence{Type: "left", Room: left, Name: m.Switchboard.UserID}
	c.tell(ctx, m.ConnectionID(), p) // no longer a member: told directly
	c.broadcast(ctx, left, p)
	return nil, nil
}

func (c *chat) onSend(ctx context.Context, m *backend.Message) ([]byte, error) {
	var req request
	if json.Unmarshal(m.Data, &req) != nil || req.Text == "" || len(req.Text) > maxTextLen {
		c.tell(ctx, m.ConnectionID(), errorFrame{Type: "error", Message: "cannot send: the text must be 1-4096 bytes"})
		return nil, nil
	}
	room, err := c.rooms.RoomOf(ctx, m.ConnectionID())
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	if room == "" {
		c.tell(ctx, m.ConnectionID(), errorFrame{Type: "error", Message: "cannot send: join a room first"})
		return nil, nil
	}
	c.broadcast(ctx, room, chatMessage{Type: "message", Room: room, From: m.Switchboard.UserID, Text: req.Text})
	return nil, nil
}

// onRooms answers on a two-way route (edge flag -two-way-routes rooms): the
// reply is the frame the client gets.
func (c *chat) onRooms(ctx context.Context, _ *backend.Message) ([]byte, error) {
	list, err := c.rooms.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	return json.Marshal(roomList{Type: "rooms", Rooms: list})
}

func (c *chat) onDefault(ctx context.Context, m *backend.Message) ([]byte, error) {
	c.tell(ctx, m.ConnectionID(), errorFrame{Type: "error", Message: "messages are JSON: use join, leave, send or rooms"})
	return nil, nil
}

// broadcast sends v to every member of room with ONE call: the room is a
// gateway group, fanned out on every edge that has members (no loop over
// connection IDs, no GoneException per member).
func (c *chat) broadcast(ctx context.Context, room string, v any) {
	ctx, cancel := context.WithTimeout(ctx, broadcastTimeout)
	defer cancel()
	data, err := json.Marshal(v)
	if err != nil {
		c.log.Error("chat: encode", "err", err)
		return
	}
	if err := c.api.SendToGroup(ctx, room, data, ""); err != nil {
		c.log.Warn("chat: send to room", "room", room, "err", err)
	}
}

// tell posts v to one connection.
func (c *chat) tell(ctx context.Context, id string, v any) {
	ctx, cancel := context.WithTimeout(ctx, broadcastTimeout)
	defer cancel()
	data, err := json.Marshal(v)
	if err != nil {
		c.log.Error("chat: encode", "err", err)
		return
	}
	c.post(ctx, id, data)
}

func (c *chat) post(ctx context.Context, id string, data []byte) {
	err := c.api.PostText(ctx, id, data)
	switch {
	case err == nil:
	case errors.Is(err, connections.ErrGone):
		// Closed, or never established: forget it, as an AWS app deletes
		// the row on GoneException.
		if _, lerr := c.rooms.Leave(ctx, id); lerr != nil {
			c.log.Warn("chat: drop gone member", "connection_id", id, "err", lerr)
		}
		c.log.Debug("chat: dropped gone member", "connection_id", id)
	default:
		c.log.Warn("chat: post", "connection_id", id, "err", err)
	}
}
