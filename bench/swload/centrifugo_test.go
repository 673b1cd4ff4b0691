package swload

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestCentrifugoCommandsAreTheProtocolsJSON(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{string(appendCFConnect(nil, "")), `{"id":1,"connect":{}}`},
		{string(appendCFConnect(nil, `a"b`)), `{"id":1,"connect":{"token":"a\"b"}}`},
		{string(appendCFSubscribe(nil, "fan")), `{"id":2,"subscribe":{"channel":"fan"}}`},
	} {
		if c.got != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
		if !json.Valid([]byte(c.got)) {
			t.Errorf("%s is not JSON", c.got)
		}
	}
}

func TestCentrifugoServerLinesAreClassified(t *testing.T) {
	for _, c := range []struct {
		line string
		want cfLine
	}{
		{`{}`, cfLine{kind: cfPing}},
		{` {} `, cfLine{kind: cfPing}},
		{`{"id":1,"connect":{"client":"4a1f","version":"6.9.1","ping":25,"pong":true}}`, cfLine{kind: cfReply, id: 1}},
		{`{"id":2,"subscribe":{}}`, cfLine{kind: cfReply, id: 2}},
		{`{"id":2}`, cfLine{kind: cfReply, id: 2}},
		{`{"id":2,"error":{"code":103,"message":"permission denied"}}`, cfLine{kind: cfError, id: 2}},
		{`{"push":{"channel":"fan","pub":{"data":{"t":1733150000000000000,"p":"xx"},"offset":3}}}`, cfLine{kind: cfPub}},
		// A publication whose data mentions "disconnect" is still one.
		{`{"push":{"channel":"fan","pub":{"data":{"disconnect":1}}}}`, cfLine{kind: cfPub}},
		{`{"push":{"channel":"","disconnect":{"code":3001,"reason":"shutdown"}}}`, cfLine{kind: cfDisconnect}},
		{`{"push":{"channel":"fan","join":{"info":{"client":"c"}}}}`, cfLine{kind: cfOther}},
		// Keys in another order: decoded in full.
		{`{"connect":{"client":"c"},"id":1}`, cfLine{kind: cfReply, id: 1}},
		{`{"error":{"code":101},"id":1}`, cfLine{kind: cfError, id: 1}},
		{`{"push":{"pub":{"data":{}},"channel":"fan"}}`, cfLine{kind: cfPub}},
		{`not json`, cfLine{kind: cfBad}},
	} {
		if got := classifyCF([]byte(c.line)); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.line, got, c.want)
		}
	}
}

func TestChannelTemplateGivesEachConnectionItsOwn(t *testing.T) {
	if got := channelFor("p{i}", 7); got != "p7" {
		t.Errorf("p{i} for 7 = %q", got)
	}
	if got := channelFor("fan", 7); got != "fan" {
		t.Errorf("fan for 7 = %q", got)
	}
}

func TestCentrifugoModeNeedsItsProtocolForChannels(t *testing.T) {
	target := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}
	for _, c := range []Config{
		{Targets: target, Channel: "fan"},
		{Targets: target, Token: "x"},
		{Targets: target, Protocol: ProtocolCentrifugo, Mode: ModeEcho},
		{Targets: target, Protocol: "mqtt"},
		{Targets: target, Mode: ModeListen, Expect: -1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: valid, want an error", c)
		}
	}
}

// fakeCentrifugo speaks the server side of Centrifugo's JSON protocol with
// gorilla/websocket: it answers connect and subscribe, pings each client
// once (wanting the pong), then sends two publications in one frame, each
// carrying its send time.
type fakeCentrifugo struct {
	mu       sync.Mutex
	channels []string
	pongs    int
	sent     int64 // the send time of every connection's first publication; the second's is 1 ns later
}

func (f *fakeCentrifugo) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/connection/websocket" {
		http.NotFound(w, r)
		return
	}
	c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	var cmd struct {
		ID        int              `json:"id"`
		Connect   *json.RawMessage `json:"connect"`
		Subscribe *struct {
			Channel string `json:"channel"`
		} `json:"subscribe"`
	}
	if err := c.ReadJSON(&cmd); err != nil || cmd.ID != 1 || cmd.Connect == nil {
		return
	}
	_ = c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{"client":"c1","version":"6","ping":25,"pong":true}}`))
	cmd.Connect = nil
	if err := c.ReadJSON(&cmd); err != nil || cmd.ID != 2 || cmd.Subscribe == nil {
		return
	}
	f.mu.Lock()
	f.channels = append(f.channels, cmd.Subscribe.Channel)
	f.mu.Unlock()
	_ = c.WriteMessage(websocket.TextMessage, []byte(`{"id":2,"subscribe":{}}`))
	_ = c.WriteMessage(websocket.TextMessage, []byte(`{}`))
	if _, pong, err := c.ReadMessage(); err != nil || string(pong) != "{}" {
		return
	}
	f.mu.Lock()
	f.pongs++
	f.mu.Unlock()
	now := f.sent
	pub := func(t int64) string {
		return fmt.Sprintf(`{"push":{"channel":%q,"pub":{"data":{"t":%d,"p":"x"}}}}`, cmd.Subscribe.Channel, t)
	}
	_ = c.WriteMessage(websocket.TextMessage, []byte(pub(now)+"\n"+pub(now+1)))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			return // the client's close
		}
	}
}

// serveWS serves h on a free loopback port until the test ends.
func serveWS(t *testing.T, h http.Handler) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}

func TestCentrifugoClientsConnectSubscribeAnswerPingsAndTimePublications(t *testing.T) {
	f := &fakeCentrifugo{sent: time.Now().UnixNano()}
	addr := serveWS(t, http.HandlerFunc(f.serve))

	const n = 20
	res, err := Run(context.Background(), Config{
		Mode: ModeListen, Protocol: ProtocolCentrifugo, Path: "/connection/websocket",
		Channel: "p{i}", IndexBase: 100, Targets: []netip.AddrPort{addr},
		Conns: n, Rate: -1, Expect: 2 * n, Hold: 30 * time.Second, Reactors: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != n || res.Failed != 0 {
		t.Fatalf("opened %d, failed %d %v; want %d opened", res.Opened, res.Failed, res.FailReasons, n)
	}
	if res.Received != 2*n || res.Latency.Count != 2*n {
		t.Errorf("received %d publications, %d timed; want %d", res.Received, res.Latency.Count, 2*n)
	}
	if res.Latency.Max <= 0 || res.Latency.Max > 10*time.Second || res.FirstRecv == 0 || res.LastRecv < res.FirstRecv {
		t.Errorf("latency %+v, first %d, last %d", res.Latency, res.FirstRecv, res.LastRecv)
	}
	// Each line of the frame is a publication of its own, counted by the
	// send time it carries.
	if len(res.BySend) != 2 || res.BySend[0].Sent != f.sent || res.BySend[1].Sent != f.sent+1 {
		t.Fatalf("by send time %+v, want %d and %d", res.BySend, f.sent, f.sent+1)
	}
	for _, s := range res.BySend {
		if s.Received != n || s.First < f.sent || s.Last < s.First || s.Last > res.LastRecv {
			t.Errorf("send time %d: %+v, want %d receipts between %d and %d", s.Sent, s, n, f.sent, res.LastRecv)
		}
	}
	// Per connection: the connect and subscribe replies, the ping, and the
	// frame of two publications; at most a read each, the 101 and the close.
	if res.WSMessages != 4*n || res.Reads < n || res.Reads > res.WSMessages+2*n || res.ReceivedBytes < int64(n*len(`{"id":2,"subscribe":{}}`)) {
		t.Errorf("%d WebSocket messages in %d reads, %d bytes; want %d messages", res.WSMessages, res.Reads, res.ReceivedBytes, 4*n)
	}
	if res.PingsAnswer != n {
		t.Errorf("pings answered %d, want %d", res.PingsAnswer, n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pongs != n {
		t.Errorf("server got %d pongs, want %d", f.pongs, n)
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("p%d", 100+i))
	}
	slices.Sort(f.channels)
	slices.Sort(want)
	if strings.Join(f.channels, ",") != strings.Join(want, ",") {
		t.Errorf("subscribed to %v, want %v", f.channels, want)
	}
}

func TestCentrifugoErrorReplyFailsTheConnection(t *testing.T) {
	addr := serveWS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
		_ = c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"error":{"code":101,"message":"unauthorized"}}`))
		_, _, _ = c.ReadMessage()
	}))
	res, err := Run(context.Background(), Config{
		Mode: ModeConnectRate, Protocol: ProtocolCentrifugo, Targets: []netip.AddrPort{addr},
		Conns: 5, Rate: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 0 || res.FailReasons[failCFError] != 5 {
		t.Errorf("opened %d, failures %v; want 5 %s", res.Opened, res.FailReasons, failCFError)
	}
}
