package edge

import (
	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/testenv"

	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// closeEvent is one Handler.Close call.
type closeEvent struct {
	id          string
	code        int
	reason      string
	why         CloseReason
	established bool
}

// recorder is a Handler that echoes messages and records every call.
type recorder struct {
	mu       sync.Mutex
	connect  func(ctx context.Context, c *Conn, r *Request) (*Accept, error)
	opened   []string
	closes   []closeEvent
	messages []string
	echo     bool
	closedCh chan closeEvent
}

func newRecorder() *recorder { return &recorder{echo: true, closedCh: make(chan closeEvent, 100000)} }

func (r *recorder) Connect(ctx context.Context, c *Conn, req *Request) (*Accept, error) {
	if r.connect != nil {
		return r.connect(ctx, c, req)
	}
	return &Accept{}, nil
}
func (r *recorder) Open(c *Conn) {
	r.mu.Lock()
	r.opened = append(r.opened, c.ID())
	r.mu.Unlock()
}
func (r *recorder) Message(c *Conn, data []byte, binary bool) {
	r.mu.Lock()
	r.messages = append(r.messages, string(data))
	r.mu.Unlock()
	if r.echo {
		_ = c.Send(data, binary)
	}
}
func (r *recorder) Close(c *Conn, code int, reason string, why CloseReason) {
	ev := closeEvent{c.ID(), code, reason, why, c.Established()}
	r.mu.Lock()
	r.closes = append(r.closes, ev)
	r.mu.Unlock()
	r.closedCh <- ev
}

func (r *recorder) waitClose(t *testing.T) closeEvent {
	t.Helper()
	select {
	case ev := <-r.closedCh:
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no Close reported")
		return closeEvent{}
	}
}

type testEdge struct {
	*Server
	rec *recorder
	reg *prometheus.Registry
	url string
}

func startEdge(t *testing.T, cfg Config, rec *recorder) *testEdge {
	t.Helper()
	return startEdgeWith(t, cfg, rec, rec)
}

// startEdgeWith starts an edge whose Handler is h (rec, or one built on it).
func startEdgeWith(t *testing.T, cfg Config, h Handler, rec *recorder) *testEdge {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.TickInterval == 0 {
		cfg.TickInterval = 20 * time.Millisecond
	}
	if cfg.DrainWindow == 0 {
		cfg.DrainWindow = 50 * time.Millisecond
	}
	reg := prometheus.NewRegistry()
	s, err := New(cfg, Options{NodeID: "test-node", Handler: h, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Errorf("Run returned %v, want ErrClosed", err)
		}
	})
	return &testEdge{Server: s, rec: rec, reg: reg, url: "ws://" + s.Addr().String() + "/"}
}

// client is a gobwas/ws client connection.
type client struct {
	net.Conn
	br *bufio.Reader
	hs ws.Handshake
}

func dial(t *testing.T, url string, d ws.Dialer) *client {
	t.Helper()
	c, err := tryDial(url, d)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func tryDial(url string, d ws.Dialer) (*client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	c := &client{Conn: nc, hs: hs, br: br}
	if br == nil {
		c.br = bufio.NewReader(nc)
	}
	return c, nil
}

// readFrame reads the next server frame (control frames included).
func (c *client) readFrame(t *testing.T) ws.Frame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := ws.ReadFrame(c.br)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return f
}

// expectClose reads frames until a close frame and returns its code/reason.
func (c *client) expectClose(t *testing.T) (ws.StatusCode, string) {
	t.Helper()
	for {
		f := c.readFrame(t)
		if f.Header.OpCode == ws.OpClose {
			code, reason := ws.ParseCloseFrameData(f.Payload)
			return code, reason
		}
	}
}

func (c *client) send(t *testing.T, f ws.Frame) {
	t.Helper()
	if err := ws.WriteFrame(c, ws.MaskFrame(f)); err != nil {
		t.Fatalf("write frame: %v", err)
	}
}

func metric(t *testing.T, c prometheus.Collector) float64 { t.Helper(); return testutil.ToFloat64(c) }

var eventually = testenv.Eventually

func TestEchoTextAndBinary(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	c := dial(t, e.url, ws.Dialer{})
	for _, tc := range []struct {
		op   ws.OpCode
		data string
	}{{ws.OpText, "hello"}, {ws.OpBinary, "\x00\xff\x01"}, {ws.OpText, strings.Repeat("x", 30000)}, {ws.OpBinary, strings.Repeat("y", 100000)}} {
		// Messages over the 32 KiB frame limit go in fragments.
		for i, op := 0, tc.op; i < len(tc.data); i, op = i+16<<10, ws.OpContinuation {
			end := min(i+16<<10, len(tc.data))
			c.send(t, ws.NewFrame(op, end == len(tc.data), []byte(tc.data[i:end])))
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, op, err := wsutil.ReadServerData(struct {
			io.Reader
			io.Writer
		}{c.br, c})
		if err != nil {
			t.Fatalf("read echo of %d bytes: %v", len(tc.data), err)
		}
		if op != tc.op || string(got) != tc.data {
			t.Fatalf("echo: got op %v len %d, want op %v len %d", op, len(got), tc.op, len(tc.data))
		}
	}
	if got := metric(t, e.metrics.open); got != 1 {
		t.Fatalf("switchboard_connections = %v, want 1", got)
	}
}

func TestPingIsAnsweredWithPong(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	c := dial(t, e.url, ws.Dialer{})
	c.send(t, ws.NewPingFrame([]byte("are you there")))
	f := c.readFrame(t)
	if f.Header.OpCode != ws.OpPong || string(f.Payload) != "are you there" {
		t.Fatalf("got %v %q, want pong with the ping's payload", f.Header.OpCode, f.Payload)
	}
}

func TestClientCloseIsEchoedAndReported(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	c := dial(t, e.url, ws.Dialer{})
	c.send(t, ws.NewCloseFrame(ws.NewCloseFrameBody(4000, "bye")))
	code, _ := c.expectClose(t)
	if code != 4000 {
		t.Fatalf("echoed close code %d, want 4000", code)
	}
	ev := e.rec.waitClose(t)
	if ev.code != 4000 || ev.reason != "bye" || ev.why != ReasonClientClose || !ev.established {
		t.Fatalf("Close reported %+v, want 4000 bye client_close", ev)
	}
	eventually(t, "connection gone from hub", func() bool { return e.Count() == 0 })
}

func TestCloseWithoutCodeReports1005(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	c := dial(t, e.url, ws.Dialer{})
	c.send(t, ws.NewCloseFrame(nil))
	if code, _ := c.expectClose(t); code != CodeNormal {
		t.Fatalf("echo code %d, want 1000", code)
	}
	if ev := e.rec.waitClose(t); ev.code != CodeNoStatus {
		t.Fatalf("reported %d, want 1005", ev.code)
	}
}

func TestPeerDisappearingReports1006(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	c := dial(t, e.url, ws.Dialer{})
	c.Close()
	if ev := e.rec.waitClose(t); ev.code != CodeAbnormal || ev.why != ReasonPeerGone {
		t.Fatalf("reported %+v, want 1006 peer_gone", ev)
	}
}

func TestFragmentedMessageWithPingInBetween(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	c := dial(t, e.url, ws.Dialer{})
	c.send(t, ws.NewFrame(ws.OpText, false, []byte("hel")))
	c.send(t, ws.NewPingFrame([]byte("p")))
	c.send(t, ws.NewFrame(ws.OpContinuation, false, []byte("lo ")))
	c.send(t, ws.NewFrame(ws.OpContinuation, true, []byte("world")))
	if f := c.readFrame(t); f.Header.OpCode != ws.OpPong {
		t.Fatalf("first reply %v, want pong", f.Header.OpCode)
	}
	f := c.readFrame(t)
	if f.Header.OpCode != ws.OpText || string(f.Payload) != "hello world" {
		t.Fatalf("got %v %q, want text \"hello world\"", f.Header.OpCode, f.Payload)
	}
}

func TestProtocolViolationsCloseWithTheRightCode(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		write func(c *client)
		code  ws.StatusCode
		why   CloseReason
	}{
		{"invalid UTF-8 text", Config{}, func(c *client) {
			_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewTextFrame([]byte{0xff, 0xfe})))
		}, 1007, ReasonInvalidUTF8},
		{"invalid UTF-8 across fragments", Config{}, func(c *client) {
			_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewFrame(ws.OpText, false, []byte{0xe2, 0x82})))
			_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewFrame(ws.OpContinuation, true, []byte{0x41})))
		}, 1007, ReasonInvalidUTF8},
		{"unmasked frame", Config{}, func(c *client) {
			_ = ws.WriteFrame(c, ws.NewTextFrame([]byte("plain")))
		}, 1002, ReasonProtocolError},
		{"reserved bits", Config{}, func(c *client) {
			f := ws.NewTextFrame([]byte("x"))
			f.Header.Rsv = ws.Rsv(true, false, false)
			_ = ws.WriteFrame(c, ws.MaskFrame(f))
		}, 1002, ReasonProtocolError},
		{"unknown opcode", Config{}, func(c *client) {
			_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewFrame(ws.OpCode(0x3), true, []byte("x"))))
		}, 1002, ReasonProtocolError},
		{"continuation without start", Config{}, func(c *client) {
			_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewFrame(ws.OpContinuation, true, []byte("x"))))
		}, 1002, ReasonProtocolError},
		{"new message inside fragmented one", Config{}, func(c *client) {
			_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewFrame(ws.OpText, false, []byte("a"))))
			_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewFrame(ws.OpText, true, []byte("b"))))
		}, 1002, ReasonProtocolError},
		{"fragmented ping", Config{}, func(c *client) {
			_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewFrame(ws.OpPing, false, []byte("a"))))
		}, 1002, ReasonProtocolError},
		{"close code 1005 sent by client", Config{}, func(c *client) {
			_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewCloseFrame([]byte{0x03, 0xed})))
		}, 1002, ReasonProtocolError},
		{"frame over the frame limit", Config{MaxFrameBytes: 1024, MaxMessageBytes: 4096}, func(c *client) {
			_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewTextFrame(make([]byte, 1025))))
		}, 1009, ReasonTooBig},
		{"message over the message limit", Config{MaxFrameBytes: 1024, MaxMessageBytes: 2048}, func(c *client) {
			for i := 0; i < 3; i++ {
				_ = ws.WriteFrame(c, ws.MaskFrame(ws.NewFrame(map[bool]ws.OpCode{true: ws.OpText, false: ws.OpContinuation}[i == 0], i == 2, make([]byte, 1000))))
			}
		}, 1009, ReasonTooBig},
		{"64-bit length with the top bit set", Config{}, func(c *client) {
			_, _ = c.Write([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4})
		}, 1002, ReasonProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := startEdge(t, tc.cfg, newRecorder())
			c := dial(t, e.url, ws.Dialer{})
			tc.write(c)
			code, _ := c.expectClose(t)
			if code != tc.code {
				t.Fatalf("close code %d, want %d", code, tc.code)
			}
			ev := e.rec.waitClose(t)
			if ev.code != int(tc.code) || ev.why != tc.why {
				t.Fatalf("reported %+v, want %d %v", ev, tc.code, tc.why)
			}
			if got := metric(t, e.metrics.closed.WithLabelValues(tc.why.String())); got != 1 {
				t.Fatalf("closed{reason=%v} = %v, want 1", tc.why, got)
			}
		})
	}
}

func TestFramesSentWithTheHandshakeAreNotLost(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	nc, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	frame, _ := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte("early"))))
	if _, err := nc.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := ws.ReadFrame(br)
	if err != nil || string(f.Payload) != "early" {
		t.Fatalf("got %q %v, want the early message echoed", f.Payload, err)
	}
}

func rawRequest(t *testing.T, addr, req string) *http.Response {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return resp
}

func TestMalformedHandshakesGetHTTPErrors(t *testing.T) {
	e := startEdge(t, Config{MaxHeaderBytes: 1024}, newRecorder())
	good := "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"not a websocket request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"POST", "POST / HTTP/1.1\r\n" + good + "\r\n", 405},
		{"bad version", "GET / HTTP/1.1\r\n" + strings.Replace(good, "Version: 13", "Version: 8", 1) + "\r\n", 426},
		{"bad key", "GET / HTTP/1.1\r\n" + strings.Replace(good, "dGhlIHNhbXBsZSBub25jZQ==", "short", 1) + "\r\n", 400},
		{"garbage request line", "HELLO\r\n\r\n", 400},
		{"header line without colon", "GET / HTTP/1.1\r\nHost x\r\n\r\n", 400},
		{"headers too large", "GET / HTTP/1.1\r\n" + good + "X-Big: " + strings.Repeat("a", 2000) + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := rawRequest(t, e.Addr().String(), tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
	if e.Count() != 0 || len(e.rec.opened) != 0 {
		t.Fatalf("a bad handshake created a connection")
	}
}

// A request longer than the small buffer the edge reads requests into
// first (big cookies, tokens) moves on to a MaxHeaderBytes one and
// upgrades as any other; the frame sent right behind it is not lost.
func TestLongUpgradeRequestIsAccepted(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	long := strings.Repeat("c", 6000) // well over smallRequest, under the 8 KiB default
	frame, err := ws.CompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte("right behind"))))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: a=" + long + "\r\n\r\n"
	if _, err := nc.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	got, err := ws.ReadFrame(br)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Payload) != "right behind" {
		t.Fatalf("echo %q", got.Payload)
	}
}

func TestSlowPartialHandshakeIsCutAtTheTimeout(t *testing.T) {
	e := startEdge(t, Config{HandshakeTimeout: 200 * time.Millisecond}, newRecorder())
	nc, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, _ = io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n")
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err == nil || errors.Is(err, os_ErrDeadline) {
		t.Fatalf("read after timeout: %v, want the server to close", err)
	}
	eventually(t, "timeout counted", func() bool { return metric(t, e.metrics.rejected.WithLabelValues("timeout")) == 1 })
}

func TestConnectRejectionGivesTheStatusAndNoConnection(t *testing.T) {
	rec := newRecorder()
	rec.connect = func(ctx context.Context, c *Conn, r *Request) (*Accept, error) {
		if r.Header.Get("Authorization") != "Bearer good" {
			return nil, &Reject{Status: 401, Reason: "unauthorized", Header: http.Header{"Www-Authenticate": {"Bearer"}}}
		}
		return &Accept{UserID: "u1", Header: http.Header{"X-Hello": {"world"}}}, nil
	}
	e := startEdge(t, Config{}, rec)
	_, err := tryDial(e.url, ws.Dialer{})
	var st ws.StatusError
	if !errors.As(err, &st) || int(st) != 401 {
		t.Fatalf("dial without token: %v, want status 401", err)
	}
	c := dial(t, e.url, ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer good"}}),
		OnHeader: func(k, v []byte) error {
			if string(k) == "X-Hello" && string(v) != "world" {
				return fmt.Errorf("X-Hello %q", v)
			}
			return nil
		}})
	_ = c
	eventually(t, "one open connection", func() bool { return e.Count() == 1 })
	var got *Conn
	e.Each(func(c *Conn) { got = c })
	if got.UserID() != "u1" {
		t.Fatalf("UserID %q, want u1", got.UserID())
	}
	// Counted once the refusal is written: the client may read it first.
	eventually(t, "rejected{denied} = 1", func() bool { return metric(t, e.metrics.rejected.WithLabelValues("denied")) == 1 })
}

func TestSubprotocolNegotiation(t *testing.T) {
	rec := newRecorder()
	rec.connect = func(ctx context.Context, c *Conn, r *Request) (*Accept, error) {
		if len(r.Protocols) > 0 && r.Protocols[0] == "graphql-transport-ws" {
			return &Accept{Subprotocol: "graphql-transport-ws"}, nil
		}
		return &Accept{}, nil
	}
	e := startEdge(t, Config{Subprotocols: []string{"chat.v2", "chat.v1"}}, rec)
	c := dial(t, e.url, ws.Dialer{Protocols: []string{"chat.v1", "chat.v2"}})
	if c.hs.Protocol != "chat.v2" {
		t.Fatalf("edge chose %q, want its own preference chat.v2", c.hs.Protocol)
	}
	c2 := dial(t, e.url, ws.Dialer{Protocols: []string{"graphql-transport-ws"}})
	if c2.hs.Protocol != "graphql-transport-ws" {
		t.Fatalf("handler choice lost: %q", c2.hs.Protocol)
	}
	c3 := dial(t, e.url, ws.Dialer{Protocols: []string{"unknown"}})
	if c3.hs.Protocol != "" {
		t.Fatalf("unsupported protocol accepted: %q", c3.hs.Protocol)
	}
}

func TestAllowedOrigins(t *testing.T) {
	e := startEdge(t, Config{AllowedOrigins: []string{"https://app.example"}}, newRecorder())
	dial(t, e.url, ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {"https://app.example"}})})
	_, err := tryDial(e.url, ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {"https://evil.example"}})})
	var st ws.StatusError
	if !errors.As(err, &st) || int(st) != 403 {
		t.Fatalf("foreign origin: %v, want 403", err)
	}
}

func TestPathMismatchIs404(t *testing.T) {
	e := startEdge(t, Config{Path: "/ws"}, newRecorder())
	dial(t, strings.TrimSuffix(e.url, "/")+"/ws", ws.Dialer{})
	_, err := tryDial(e.url+"other", ws.Dialer{})
	var st ws.StatusError
	if !errors.As(err, &st) || int(st) != 404 {
		t.Fatalf("wrong path: %v, want 404", err)
	}
}

func TestIdleTimeoutAndMaxDuration(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		e := startEdge(t, Config{IdleTimeout: 150 * time.Millisecond}, newRecorder())
		c := dial(t, e.url, ws.Dialer{})
		if code, reason := c.expectClose(t); code != 1001 || reason != "idle timeout" {
			t.Fatalf("close %d %q, want 1001 idle timeout", code, reason)
		}
		if ev := e.rec.waitClose(t); ev.why != ReasonIdleTimeout {
			t.Fatalf("reason %v", ev.why)
		}
	})
	t.Run("activity keeps it open", func(t *testing.T) {
		// 20 pings 100 ms apart outlast the 1.5 s idle timeout several
		// times over; each gap is far inside it, even on a slow machine.
		e := startEdge(t, Config{IdleTimeout: 1500 * time.Millisecond}, newRecorder())
		c := dial(t, e.url, ws.Dialer{})
		for i := 0; i < 20; i++ { // pings count as activity
			c.send(t, ws.NewPingFrame(nil))
			if f := c.readFrame(t); f.Header.OpCode != ws.OpPong {
				t.Fatalf("got %v", f.Header.OpCode)
			}
			time.Sleep(100 * time.Millisecond) // pacing the client, not waiting for a condition
		}
		if e.Count() != 1 {
			t.Fatal("active connection was closed")
		}
	})
	t.Run("max duration", func(t *testing.T) {
		e := startEdge(t, Config{MaxDuration: 150 * time.Millisecond}, newRecorder())
		c := dial(t, e.url, ws.Dialer{})
		if code, _ := c.expectClose(t); code != 1001 {
			t.Fatalf("close %d, want 1001", code)
		}
		if ev := e.rec.waitClose(t); ev.why != ReasonMaxDuration {
			t.Fatalf("reason %v", ev.why)
		}
	})
}

func TestServerPingsFindDeadPeers(t *testing.T) {
	e := startEdge(t, Config{PingInterval: 200 * time.Millisecond, PingTimeout: time.Second}, newRecorder())
	c := dial(t, e.url, ws.Dialer{})
	// A live client answers the ping and stays.
	f := c.readFrame(t)
	if f.Header.OpCode != ws.OpPing {
		t.Fatalf("got %v, want a server ping", f.Header.OpCode)
	}
	c.send(t, ws.NewPongFrame(f.Payload))
	// Then it stops answering: the edge gives up on it.
	ev := e.rec.waitClose(t)
	if ev.why != ReasonPingTimeout || ev.code != CodeAbnormal {
		t.Fatalf("reported %+v, want ping_timeout 1006", ev)
	}
}

func TestPartialFrameIsCutAtTheFrameTimeout(t *testing.T) {
	e := startEdge(t, Config{FrameTimeout: 150 * time.Millisecond}, newRecorder())
	c := dial(t, e.url, ws.Dialer{})
	_, _ = c.Write([]byte{0x81, 0x85, 1, 2, 3}) // header says 5 bytes follow; they never do
	if code, _ := c.expectClose(t); code != 1008 {
		t.Fatalf("close %d, want 1008", code)
	}
	if ev := e.rec.waitClose(t); ev.why != ReasonReadTimeout {
		t.Fatalf("reason %v", ev.why)
	}
}

func TestSlowConsumerIsClosedWithANamedReason(t *testing.T) {
	e := startEdge(t, Config{MaxQueueBytes: 256 << 10, WriteTimeout: 30 * time.Second}, newRecorder())
	c := dial(t, e.url, ws.Dialer{})
	// Established, not only counted: a post that lands while the 101 is
	// still on its way is held in the pending queue, which refuses without
	// closing.
	var id string
	eventually(t, "connection established", func() bool {
		e.Each(func(c *Conn) {
			if c.Established() && c.phase().reading() {
				id = c.ID()
			}
		})
		return id != ""
	})
	msg := make([]byte, 64<<10)
	var err error
	for i := 0; i < 10000 && err == nil; i++ { // the client never reads
		err = e.Post(context.Background(), id, msg, true)
	}
	if !errors.Is(err, errBufferFullForTest()) {
		t.Fatalf("post to a client that never reads: %v, want ErrBufferFull", err)
	}
	ev := e.rec.waitClose(t)
	if ev.why != ReasonSlowConsumer {
		t.Fatalf("reason %v, want slow_consumer", ev.why)
	}
	_ = c
}

func TestPostsDuringConnectAreDeliveredFirst(t *testing.T) {
	rec := newRecorder()
	rec.connect = func(ctx context.Context, c *Conn, r *Request) (*Accept, error) {
		// The backend posts while $connect is still running.
		if err := c.srv.Post(ctx, c.ID(), []byte("welcome"), false); err != nil {
			return nil, err
		}
		return &Accept{}, nil
	}
	e := startEdge(t, Config{}, rec)
	c := dial(t, e.url, ws.Dialer{})
	f := c.readFrame(t)
	if string(f.Payload) != "welcome" {
		t.Fatalf("first frame %q, want welcome", f.Payload)
	}
}

func TestDrainClosesEveryConnectionWith1001(t *testing.T) {
	rec := newRecorder()
	e := startEdge(t, Config{DrainWindow: 200 * time.Millisecond}, rec)
	const n = 50
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(t, e.url, ws.Dialer{})
	}
	eventually(t, "all open", func() bool { return metric(t, e.metrics.open) == n })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- e.Shutdown(ctx)
	}()
	for _, c := range clients {
		if code, _ := c.expectClose(t); code != 1001 {
			t.Fatalf("close %d, want 1001", code)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.closes) != n {
		t.Fatalf("%d Close reports, want %d", len(rec.closes), n)
	}
	for _, ev := range rec.closes {
		if ev.why != ReasonDrain || ev.code != 1001 {
			t.Fatalf("reported %+v, want drain 1001", ev)
		}
	}
	if _, err := tryDial(e.url, ws.Dialer{}); err == nil {
		t.Fatal("a draining node accepted a connection")
	}
}

func TestAPICloseSendsCodeAndReason(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	c := dial(t, e.url, ws.Dialer{})
	eventually(t, "registered", func() bool { return e.Count() == 1 })
	var id string
	e.Each(func(c *Conn) { id = c.ID() })
	if err := e.Close(context.Background(), id, 1005, ""); err == nil {
		t.Fatal("reserved close code accepted")
	}
	for _, bad := range []struct {
		code   int
		reason string
		says   string
	}{
		{1005, "", "1005"},
		{5000, "", "5000"},
		{4000, "bye\xff", "not valid UTF-8"},
		{4000, strings.Repeat("x", 124), "124 bytes (max 123)"},
	} {
		err := e.Close(context.Background(), id, bad.code, bad.reason)
		if !errors.Is(err, conn.ErrInvalidCloseCode) || !strings.Contains(err.Error(), bad.says) {
			t.Fatalf("Close(%d, %q) = %v, want ErrInvalidCloseCode saying %q", bad.code, bad.reason, err, bad.says)
		}
	}
	if _, err := e.Info(context.Background(), id); err != nil {
		t.Fatalf("a refused close changed the connection: %v", err)
	}
	if err := e.Close(context.Background(), id, 4401, "unauthorized"); err != nil {
		t.Fatal(err)
	}
	if code, reason := c.expectClose(t); code != 4401 || reason != "unauthorized" {
		t.Fatalf("close %d %q, want 4401 unauthorized", code, reason)
	}
	if ev := e.rec.waitClose(t); ev.code != 4401 || ev.why != ReasonAPIClose {
		t.Fatalf("reported %+v", ev)
	}
	if _, err := e.Info(context.Background(), id); err == nil {
		t.Fatal("Info of a closed connection succeeded")
	}
}

func TestIdleConnectionsCostNoGoroutines(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	// Warm up: the reactor, workers and sweeper exist before we count.
	dial(t, e.url, ws.Dialer{})
	eventually(t, "warm", func() bool { return e.Count() == 1 })
	const n = 2000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	before := runtime.NumGoroutine()
	for i := 0; i < n; i++ {
		c, err := tryDial(e.url, ws.Dialer{})
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c.Conn)
	}
	eventually(t, "all registered", func() bool { return metric(t, e.metrics.open) == n+1 })
	eventually(t, "handshake goroutines gone", func() bool { return runtime.NumGoroutine()-before < 50 })
	// The clients' own goroutines are none (gobwas dialer); growth would be
	// per-connection server goroutines.
	if grow := runtime.NumGoroutine() - before; grow >= 50 {
		t.Fatalf("%d goroutines for %d idle connections", grow, n)
	}
}

func TestMetricsLint(t *testing.T) {
	e := startEdge(t, Config{}, newRecorder())
	problems, err := testutil.GatherAndLint(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}

func TestApplicationPingIsAnsweredByTheEdge(t *testing.T) {
	rec := newRecorder()
	rec.echo = false
	e := startEdge(t, Config{AppPing: "ping"}, rec)
	c := dial(t, e.url, ws.Dialer{})
	c.send(t, ws.NewTextFrame([]byte("ping")))
	if f := c.readFrame(t); string(f.Payload) != "pong" {
		t.Fatalf("got %q, want pong", f.Payload)
	}
	c.send(t, ws.NewTextFrame([]byte("pings")))
	eventually(t, "other messages still routed", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.messages) == 1 && rec.messages[0] == "pings"
	})
	if n := metric(t, e.metrics.appPings); n != 1 {
		t.Fatalf("app pings %v, want 1", n)
	}
}

func TestPostsDuringConnectCanBeRefusedLikeAPIGateway(t *testing.T) {
	rec := newRecorder()
	posted := make(chan error, 1)
	rec.connect = func(ctx context.Context, c *Conn, r *Request) (*Accept, error) {
		posted <- c.srv.Post(ctx, c.ID(), []byte("too early"), false)
		return &Accept{}, nil
	}
	e := startEdge(t, Config{PendingQueueBytes: -1}, rec)
	dial(t, e.url, ws.Dialer{})
	if err := <-posted; !errors.Is(err, errGoneForTest()) {
		t.Fatalf("post during $connect: %v, want ErrGone (410)", err)
	}
}

// A close that lands between the 101 and the connection's registration in
// the reactor still reaches the client as a close frame with its code.
func TestCloseRightAfterTheUpgradeKeepsItsCode(t *testing.T) {
	rec := newRecorder()
	e := startEdge(t, Config{}, rec)
	for i := 0; i < 20; i++ {
		c := dial(t, e.url, ws.Dialer{})
		var id string
		eventually(t, "connection in the hub", func() bool {
			e.Each(func(c *Conn) { id = c.ID() })
			return id != ""
		})
		if err := e.Close(context.Background(), id, 4401, "again"); err != nil {
			t.Fatal(err)
		}
		if code, reason := c.expectClose(t); code != 4401 || reason != "again" {
			t.Fatalf("close %d %q, want 4401 again", code, reason)
		}
		if ev := rec.waitClose(t); ev.code != 4401 || !ev.established {
			t.Fatalf("reported %+v", ev)
		}
		eventually(t, "hub empty", func() bool { return e.Count() == 0 })
	}
}
