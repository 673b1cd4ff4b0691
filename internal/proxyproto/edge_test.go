package proxyproto

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/switchboardgw/switchboard/internal/edge"
)

// echoHandler is the smallest edge.Handler: it records the source IP the
// edge put in each Request and echoes messages. It has no policy of its own:
// what the node makes of the address ($connect, events, registry) is
// internal/session's TestTheClientBehindAPROXYHeaderIsTheSourceOfItsConnection.
type echoHandler struct {
	mu     sync.Mutex
	source []string
}

func (h *echoHandler) Connect(_ context.Context, _ *edge.Conn, r *edge.Request) (*edge.Accept, error) {
	h.mu.Lock()
	h.source = append(h.source, r.SourceIP)
	h.mu.Unlock()
	return &edge.Accept{}, nil
}
func (h *echoHandler) Open(*edge.Conn)                                 {}
func (h *echoHandler) Message(c *edge.Conn, data []byte, binary bool)  { _ = c.Send(data, binary) }
func (h *echoHandler) Close(*edge.Conn, int, string, edge.CloseReason) {}

// The edge behind a PROXY listener: the Request carries the client's address
// from the header (v1 and v2), and the epoll reactor, reading the raw fd
// after the header, gets every frame.
func TestTheEdgeBehindAProxyListenerSeesTheHeadersClientAndEveryFrame(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(inner, Config{Required: true, TrustAll: true})
	if err != nil {
		t.Fatal(err)
	}
	h := &echoHandler{}
	s, err := edge.New(edge.Config{Listen: "127.0.0.1:0"}, edge.Options{Handler: h, Listener: ln,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		if err := <-errc; !errors.Is(err, edge.ErrClosed) {
			t.Errorf("Run: %v", err)
		}
	})

	for _, hdr := range [][]byte{
		[]byte("PROXY TCP4 203.0.113.7 198.51.100.2 40000 443\r\n"),
		v2inet6("2001:db8::7", "2001:db8::1", 40000, 443),
	} {
		d := ws.Dialer{Timeout: 20 * time.Second, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, addr)
			if err == nil {
				_, err = c.Write(hdr)
			}
			return c, err
		}}
		c, br, _, err := d.Dial(context.Background(), "ws://"+ln.Addr().String()+"/")
		if err != nil {
			t.Fatalf("dial through PROXY header: %v", err)
		}
		defer c.Close()
		if br != nil {
			ws.PutReader(br)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if err := wsutil.WriteClientText(c, []byte("ping through proxy")); err != nil {
			t.Fatal(err)
		}
		got, err := wsutil.ReadServerText(struct {
			io.Reader
			io.Writer
		}{c, c})
		if err != nil || string(got) != "ping through proxy" {
			t.Fatalf("echo = %q, %v", got, err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.source) != 2 || h.source[0] != "203.0.113.7" || h.source[1] != "2001:db8::7" {
		t.Fatalf("requests had sources %q, want the headers' clients", h.source)
	}
}
