package admission_test

import (
	"github.com/switchboardgw/switchboard/internal/testenv"

	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/switchboardgw/switchboard/internal/admission"
	"github.com/switchboardgw/switchboard/internal/edge"
)

// limitedEcho is the wiring the node uses, reduced to an echo server:
// Admit in Connect (refusal = HTTP status on the upgrade), release on
// Close, a MessageLimiter in the connection state (abuse = close 1008).
type limitedEcho struct {
	adm    *admission.Controller
	mu     sync.Mutex
	closed []int // close codes the node chose or received
}

type state struct {
	release func()
	lim     admission.MessageLimiter
	limited bool
}

func (h *limitedEcho) Connect(_ context.Context, _ *edge.Conn, r *edge.Request) (*edge.Accept, error) {
	user := r.Header.Get("X-User") // stands in for the authorizer's user ID
	release, err := h.adm.Admit(r.SourceIP, user)
	if err != nil {
		return nil, &edge.Reject{Status: admission.StatusOf(err), Reason: http.StatusText(admission.StatusOf(err))}
	}
	return &edge.Accept{UserID: user, Value: &state{release: release, lim: h.adm.MessageLimiter()}}, nil
}

func (h *limitedEcho) Open(*edge.Conn) {}

func (h *limitedEcho) Message(c *edge.Conn, data []byte, binary bool) {
	st := c.Value().(*state)
	if !st.lim.Allow(time.Now()) {
		if !st.limited {
			st.limited = true
			h.adm.MessageRejected()
			c.Close(edge.CodePolicy, "message rate exceeded", edge.ReasonPolicy)
		}
		return
	}
	_ = c.Send(data, binary)
}

func (h *limitedEcho) Close(c *edge.Conn, code int, _ string, _ edge.CloseReason) {
	c.Value().(*state).release()
	h.mu.Lock()
	h.closed = append(h.closed, code)
	h.mu.Unlock()
}

func (h *limitedEcho) closeCodes() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.closed...)
}

func startEdge(t *testing.T, adm *admission.Controller) (string, *limitedEcho) {
	t.Helper()
	h := &limitedEcho{adm: adm}
	s, err := edge.New(edge.Config{Listen: "127.0.0.1:0"}, edge.Options{Handler: h,
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
	return "ws://" + s.Addr().String() + "/", h
}

type wsClient struct {
	net.Conn
}

func dial(url, user string) (*wsClient, error) {
	d := ws.Dialer{Timeout: 20 * time.Second, Header: ws.HandshakeHeaderHTTP(http.Header{"X-User": {user}})}
	c, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		return nil, err
	}
	if br != nil {
		ws.PutReader(br)
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &wsClient{c}, nil
}

func (c *wsClient) echo(t *testing.T, msg string) {
	t.Helper()
	if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := wsutil.ReadServerText(struct {
		io.Reader
		io.Writer
	}{c, c})
	if err != nil || string(got) != msg {
		t.Fatalf("echo = %q, %v", got, err)
	}
}

func wantStatus(t *testing.T, err error, status int) {
	t.Helper()
	var se ws.StatusError
	if !errors.As(err, &se) || int(se) != status {
		t.Fatalf("dial err = %v, want HTTP %d", err, status)
	}
}

func TestEdgeConnectionLimits(t *testing.T) {
	adm, err := admission.New(admission.Config{MaxConns: 3, MaxConnsPerUser: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	url, _ := startEdge(t, adm)
	a1, err := dial(url, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer a1.Close()
	a2, err := dial(url, "alice")
	if err != nil {
		t.Fatal(err)
	}
	_, err = dial(url, "alice")
	wantStatus(t, err, http.StatusTooManyRequests) // alice's third
	b1, err := dial(url, "bob")
	if err != nil {
		t.Fatal(err)
	}
	defer b1.Close()
	_, err = dial(url, "carol")
	wantStatus(t, err, http.StatusServiceUnavailable) // the node is full
	// Refusals touched no open connection.
	a1.echo(t, "still here")
	b1.echo(t, "me too")

	// A closed connection gives its slot back (once the edge has seen it go).
	a2.Close()
	testenv.Eventually(t, "the closed connection's slot released", func() bool { return adm.Conns() == 2 })
	a3, err := dial(url, "alice")
	if err != nil {
		t.Fatalf("slot not released: %v", err)
	}
	a3.Close()
}

func TestEdgePerIPRate(t *testing.T) {
	adm, err := admission.New(admission.Config{ConnRatePerIP: 0.001, ConnBurstPerIP: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	url, _ := startEdge(t, adm)
	for i := 0; i < 2; i++ {
		c, err := dial(url, "")
		if err != nil {
			t.Fatalf("connection %d within the burst: %v", i, err)
		}
		c.Close()
	}
	_, err = dial(url, "")
	wantStatus(t, err, http.StatusTooManyRequests)
}

// A client flooding messages is closed with 1008; a well-behaved
// neighbour keeps working.
func TestEdgeMessageFloodClosesOnlyTheAbuser(t *testing.T) {
	adm, err := admission.New(admission.Config{MsgRate: 1, MsgBurst: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	url, h := startEdge(t, adm)
	good, err := dial(url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	bad, err := dial(url, "")
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	good.echo(t, "hello")

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			if wsutil.WriteClientText(bad, []byte("spam")) != nil {
				return // closed under us: expected
			}
		}
	}()
	// The node closes the abuser with 1008. The client reads the echoes of
	// the burst and then the close frame (or, as the node does not linger,
	// a reset that may overtake it).
	for {
		frame, err := ws.ReadFrame(bad)
		if err != nil {
			break
		}
		if frame.Header.OpCode == ws.OpClose {
			if code, _ := ws.ParseCloseFrameData(frame.Payload); code != ws.StatusPolicyViolation {
				t.Fatalf("abuser closed with %d, want 1008", code)
			}
			break
		}
	}
	wg.Wait()
	testenv.Eventually(t, "the abuser closed", func() bool { return len(h.closeCodes()) > 0 })
	if got := h.closeCodes(); len(got) != 1 || got[0] != edge.CodePolicy {
		t.Fatalf("close codes = %v, want one 1008 (the abuser only)", got)
	}
	if adm.Conns() != 1 {
		t.Fatalf("Conns = %d, want 1 (the good client)", adm.Conns())
	}
	good.echo(t, strings.Repeat("still fine ", 3))
}
