package api

import (
	"github.com/switchboardgw/switchboard/internal/testenv"

	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/conn"
	"github.com/switchboardgw/switchboard/internal/rules"
)

// fakeController is an in-memory conn.Controller: the boundary of this
// package. Connections are added with add; Post records messages; errors
// can be queued to be returned by the next Post calls.
type fakeController struct {
	mu        sync.Mutex
	conns     map[string]*fakeConn
	postErrs  []error // returned by the next Post calls, in order
	postCalls int
}

type fakeConn struct {
	info   conn.Info
	msgs   []fakeMsg
	closed bool
	code   int
	reason string
}

type fakeMsg struct {
	data   string
	binary bool
}

func newFake() *fakeController { return &fakeController{conns: map[string]*fakeConn{}} }

// add registers a live connection and returns its ID.
func (f *fakeController) add(info conn.Info) string {
	if info.ID == "" {
		info.ID = conn.NewID()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conns[info.ID] = &fakeConn{info: info}
	return info.ID
}

func (f *fakeController) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, id)
}

func (f *fakeController) failNextPosts(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.postErrs = append(f.postErrs, errs...)
}

func (f *fakeController) messages(id string) []fakeMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[id]; ok {
		return append([]fakeMsg(nil), c.msgs...)
	}
	return nil
}

func (f *fakeController) closedWith(id string) (closed bool, code int, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[id]; ok {
		return c.closed, c.code, c.reason
	}
	return false, 0, ""
}

func (f *fakeController) posts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.postCalls
}

func (f *fakeController) Post(_ context.Context, id string, data []byte, binary bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.postCalls++
	if len(f.postErrs) > 0 {
		err := f.postErrs[0]
		f.postErrs = f.postErrs[1:]
		return err
	}
	c, ok := f.conns[id]
	if !ok || c.closed {
		return conn.ErrGone
	}
	c.msgs = append(c.msgs, fakeMsg{data: string(data), binary: binary})
	return nil
}

func (f *fakeController) Info(_ context.Context, id string) (conn.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.conns[id]
	if !ok || c.closed {
		return conn.Info{}, conn.ErrGone
	}
	return c.info, nil
}

func (f *fakeController) Close(_ context.Context, id string, code int, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.conns[id]
	if !ok || c.closed {
		return conn.ErrGone
	}
	if err := rules.CheckClose(code, reason); err != nil {
		return err
	}
	c.closed, c.code, c.reason = true, code, reason
	return nil
}

var _ conn.Controller = (*fakeController)(nil)

// testLogger discards unless -v, so failures can still be read.
func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// newTestAPI builds an API over ctrl with its own registry.
func newTestAPI(t testing.TB, cfg Config, ctrl conn.Controller) (*API, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := New(cfg, ctrl, reg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a, reg
}

// serve runs the API's handler on a loopback httptest server.
func serve(t testing.TB, a *API) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return srv
}

var eventually = testenv.Eventually

var testConnectedAt = time.Date(2026, 3, 4, 5, 6, 7, 891_000_000, time.UTC)

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
