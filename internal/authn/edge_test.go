package authn_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboardgw/switchboard/internal/authn"
	"github.com/switchboardgw/switchboard/internal/edge"
)

const secret = "edge-test-secret-edge-test-secret-0123456789"

// authHandler is the node's wiring reduced to the authorizer: refuse with
// StatusOf before anything else, accept with the user and subprotocol.
type authHandler struct {
	a     *authn.JWT
	mu    sync.Mutex
	users []string
}

func (h *authHandler) Connect(_ context.Context, _ *edge.Conn, r *edge.Request) (*edge.Accept, error) {
	res, err := h.a.Authorize(r)
	if err != nil {
		return nil, &edge.Reject{Status: authn.StatusOf(err), Header: http.Header{"Www-Authenticate": {"Bearer"}},
			Reason: http.StatusText(authn.StatusOf(err))}
	}
	h.mu.Lock()
	h.users = append(h.users, res.UserID)
	h.mu.Unlock()
	return &edge.Accept{UserID: res.UserID, Subprotocol: res.Subprotocol}, nil
}
func (h *authHandler) Open(*edge.Conn)                                 {}
func (h *authHandler) Message(*edge.Conn, []byte, bool)                {}
func (h *authHandler) Close(*edge.Conn, int, string, edge.CloseReason) {}

func TestEdgeWithJWT(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(keyFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := authn.New(authn.Config{KeysFile: keyFile, Query: "token", SubprotocolPrefix: "jwt."}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h := &authHandler{a: a}
	s, err := edge.New(edge.Config{Listen: "127.0.0.1:0"}, edge.Options{Handler: h, Logger: slog.New(slog.DiscardHandler)})
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
	url := "ws://" + s.Addr().String() + "/"
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).
		SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}

	// A browser-style client: the token rides in the offered protocols, and
	// the 101 must answer with the real protocol, never the token.
	d := ws.Dialer{Timeout: 20 * time.Second, Protocols: []string{"chat.v1", "jwt." + tok}}
	c, _, hs, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatalf("dial with a token in Sec-WebSocket-Protocol: %v", err)
	}
	c.Close()
	if hs.Protocol != "chat.v1" {
		t.Fatalf("101 chose subprotocol %q, want chat.v1", hs.Protocol)
	}
	c, _, _, err = ws.Dialer{Timeout: 20 * time.Second}.Dial(context.Background(), url+"?token="+tok)
	if err != nil {
		t.Fatalf("dial with ?token=: %v", err)
	}
	c.Close()

	for name, d := range map[string]ws.Dialer{
		"no token":       {},
		"forged token":   {Header: ws.HandshakeHeaderHTTP(http.Header{"Authorization": {"Bearer " + tok + "x"}})},
		"token in other": {Protocols: []string{"chat.v1"}},
	} {
		d.Timeout = 20 * time.Second
		_, _, _, err := d.Dial(context.Background(), url)
		var se ws.StatusError
		if !errors.As(err, &se) || int(se) != http.StatusUnauthorized {
			t.Errorf("%s: dial err = %v, want HTTP 401", name, err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.users) != 2 || h.users[0] != "alice" {
		t.Fatalf("accepted users = %q, want alice twice", h.users)
	}
}
