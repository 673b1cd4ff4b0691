package app

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboardgw/switchboard/pkg/backend"
)

// The built-in JWT authorizer, per-user connection limits and the message
// rate limit, through real clients on a real node.
func TestJWTAndAdmissionLimits(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef-test-secret")
	keys := filepath.Join(t.TempDir(), "hs256.key")
	if err := os.WriteFile(keys, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	e := startTestEdge(t, testEdgeConfig(t, "-jwt-keys-file", keys, "-jwt-query", "token",
		"-max-conns-per-user", "1", "-msg-rate", "5"))
	ev := &events{}
	startBackend(t, e.NATSURL(), func(b *backend.Backend) { ev = recordEvents(t, b) })
	token := func(sub string, exp time.Duration) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": time.Now().Add(exp).Unix()}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	url := "ws://" + e.WSAddr() + "/"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	status := func(u string) int {
		c, resp, err := websocket.Dial(ctx, u, nil)
		if err == nil {
			c.CloseNow()
			return 101
		}
		if resp == nil {
			t.Fatalf("dial %s: %v", u, err)
		}
		return resp.StatusCode
	}
	for name, u := range map[string]string{
		"no token":      url,
		"expired token": url + "?token=" + token("alice", -time.Minute),
		"forged token":  url + "?token=" + token("alice", time.Hour) + "x",
	} {
		if got := status(u); got != http.StatusUnauthorized {
			t.Errorf("%s: HTTP %d, want 401", name, got)
		}
	}

	c, _, err := websocket.Dial(ctx, url+"?token="+token("alice", time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	// The token's subject is the user on events.
	eventually(t, "CONNECT with the JWT's user", func() bool {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		for _, e := range ev.connects {
			if e.Switchboard.UserID == "alice" {
				return true
			}
		}
		return false
	})
	// One connection per user: alice's second is refused, bob is not.
	if got := status(url + "?token=" + token("alice", time.Hour)); got != http.StatusTooManyRequests {
		t.Fatalf("second connection of alice: %d, want 429", got)
	}
	if got := status(url + "?token=" + token("bob", time.Hour)); got != 101 {
		t.Fatalf("bob: %d, want 101", got)
	}
	// A flood closes the flooder with 1008.
	for i := 0; i < 50; i++ {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"action":"x"}`)); err != nil {
			break
		}
	}
	// (Frames before the close, e.g. "no route" errors for route x, are skipped.)
	for err == nil {
		_, _, err = c.Read(ctx)
	}
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("flooder saw %v, want close 1008", err)
	}
}
