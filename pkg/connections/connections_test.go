package connections_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/api"
	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/pkg/connections"
)

// memCtrl is a minimal in-memory conn.Controller behind the real API handler.
type memCtrl struct {
	mu       sync.Mutex
	live     map[string]conn.Info
	sent     map[string][]sent
	closed   map[string][2]any
	fullOnce bool
}

type sent struct {
	data   string
	binary bool
}

func (m *memCtrl) Post(_ context.Context, id string, data []byte, binary bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fullOnce {
		m.fullOnce = false
		return conn.ErrBufferFull
	}
	if _, ok := m.live[id]; !ok {
		return conn.ErrGone
	}
	m.sent[id] = append(m.sent[id], sent{string(data), binary})
	return nil
}

func (m *memCtrl) Info(_ context.Context, id string) (conn.Info, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i, ok := m.live[id]; ok {
		return i, nil
	}
	return conn.Info{}, conn.ErrGone
}

func (m *memCtrl) Close(_ context.Context, id string, code int, reason string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live[id]; !ok {
		return conn.ErrGone
	}
	delete(m.live, id)
	m.closed[id] = [2]any{code, reason}
	return nil
}

const token = "client-test-token"

func setup(t *testing.T) (*memCtrl, *connections.Client, string) {
	t.Helper()
	m := &memCtrl{live: map[string]conn.Info{}, sent: map[string][]sent{}, closed: map[string][2]any{}}
	id := conn.NewID()
	m.live[id] = conn.Info{ID: id, Node: "edge-a", UserID: "alice", SourceIP: "198.51.100.1", UserAgent: "ua",
		ConnectedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), LastActiveAt: time.Date(2026, 1, 1, 0, 1, 0, 0, time.UTC)}
	a, err := api.New(api.Config{Auth: api.AuthConfig{Tokens: []string{token}}}, m, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	c, err := connections.New(srv.URL+"/prod/", connections.Options{Token: token, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return m, c, id
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestClientOperations(t *testing.T) {
	m, c, id := setup(t)

	if err := c.Post(ctx(t), id, []byte("auto text")); err != nil {
		t.Fatal(err)
	}
	if err := c.PostText(ctx(t), id, []byte(`{"t":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.PostBinary(ctx(t), id, []byte("bytes")); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	got := append([]sent(nil), m.sent[id]...)
	m.mu.Unlock()
	want := []sent{{"auto text", false}, {`{"t":1}`, false}, {"bytes", true}}
	if len(got) != len(want) {
		t.Fatalf("sent %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sent %+v, want %+v", got, want)
		}
	}

	info, err := c.Get(ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != id || info.NodeID != "edge-a" || info.UserID != "alice" || info.SourceIP != "198.51.100.1" ||
		!info.ConnectedAt.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) || !info.LastActiveAt.Equal(time.Date(2026, 1, 1, 0, 1, 0, 0, time.UTC)) {
		t.Fatalf("Get = %+v", info)
	}

	if ok, err := c.Exists(ctx(t), id); err != nil || !ok {
		t.Fatalf("Exists = %v, %v", ok, err)
	}
	if err := c.Delete(ctx(t), id, 4401, "unauthorized"); err != nil {
		t.Fatal(err)
	}
	if got := m.closed[id]; got != [2]any{4401, "unauthorized"} {
		t.Fatalf("closed with %v", got)
	}
	if ok, err := c.Exists(ctx(t), id); err != nil || ok {
		t.Fatalf("Exists after Delete = %v, %v", ok, err)
	}
	err = c.Post(ctx(t), id, []byte("late"))
	if !errors.Is(err, connections.ErrGone) {
		t.Fatalf("Post after Delete: %v, want ErrGone", err)
	}
	var e *connections.Error
	if !errors.As(err, &e) || e.Code != "GoneException" || e.RequestID == "" {
		t.Fatalf("error details: %+v", e)
	}
	if _, err := c.Get(ctx(t), id); !errors.Is(err, connections.ErrGone) {
		t.Fatalf("Get after Delete: %v", err)
	}
}

func TestClientTypedErrors(t *testing.T) {
	m, c, id := setup(t)
	if err := c.Delete(ctx(t), id, 1005, ""); !errors.Is(err, connections.ErrBadRequest) {
		t.Fatalf("reserved close code: %v, want ErrBadRequest", err)
	}
	if err := c.PostBinary(ctx(t), id, make([]byte, 128<<10+1)); !errors.Is(err, connections.ErrTooLarge) {
		t.Fatalf("oversized: %v, want ErrTooLarge", err)
	}
	m.mu.Lock()
	m.fullOnce = true
	m.mu.Unlock()
	if err := c.Post(ctx(t), id, []byte("x")); !errors.Is(err, connections.ErrLimitExceeded) {
		t.Fatalf("buffer full: %v, want ErrLimitExceeded", err)
	}
	bad, err := connections.New(c.Endpoint(), connections.Options{Token: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Post(ctx(t), id, []byte("x")); !errors.Is(err, connections.ErrForbidden) {
		t.Fatalf("wrong token: %v, want ErrForbidden", err)
	}
	if _, err := connections.New("ftp://x", connections.Options{}); err == nil {
		t.Fatal("ftp endpoint accepted")
	}
}

func TestClientBatch(t *testing.T) {
	m, c, id := setup(t)
	res, err := c.PostBatch(ctx(t), []connections.Message{
		{ConnectionID: id, Data: []byte("one")},
		{ConnectionID: id, Data: []byte{0, 1}, Binary: true},
		{ConnectionID: conn.NewID(), Data: []byte("nobody")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[0].Err != nil || res[1].Err != nil || !errors.Is(res[2].Err, connections.ErrGone) {
		t.Fatalf("results %+v", res)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if got := m.sent[id]; len(got) != 2 || got[0] != (sent{"one", false}) || got[1] != (sent{"\x00\x01", true}) {
		t.Fatalf("sent %+v", got)
	}
}
