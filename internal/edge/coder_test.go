package edge

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// An independent client implementation (coder/websocket) must interoperate:
// handshake, subprotocol, text and binary echo, fragmented writes and the
// close handshake with an application code.
func TestIndependentClientInteroperates(t *testing.T) {
	e := startEdge(t, Config{Subprotocols: []string{"v1"}}, newRecorder())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{Subprotocols: []string{"v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != "v1" || resp.StatusCode != 101 {
		t.Fatalf("subprotocol %q status %d", c.Subprotocol(), resp.StatusCode)
	}
	c.SetReadLimit(1 << 20)
	for _, m := range []struct {
		typ  websocket.MessageType
		data string
	}{{websocket.MessageText, "héllo"}, {websocket.MessageBinary, "\x00\x01"}, {websocket.MessageText, strings.Repeat("z", 100<<10)}} {
		// coder/websocket's Writer sends large messages as several frames.
		w, err := c.Writer(ctx, m.typ)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(m.data); i += 8 << 10 {
			if _, err := w.Write([]byte(m.data[i:min(i+8<<10, len(m.data))])); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ != m.typ || string(got) != m.data {
			t.Fatalf("echo mismatch: type %v len %d", typ, len(got))
		}
	}
	if err := c.Close(4001, "done"); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("close handshake: %v", err)
	}
	ev := e.rec.waitClose(t)
	if ev.code != 4001 || ev.reason != "done" || ev.why != ReasonClientClose {
		t.Fatalf("reported %+v, want 4001 done", ev)
	}
}
