package groups

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/cluster"
	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// rawMember is a WebSocket client that reads whole frames, to see which
// came compressed.
type rawMember struct {
	ws.Handshake
	br *bufio.Reader
	nc interface {
		SetReadDeadline(time.Time) error
	}
}

// next returns the next data message, inflated, and whether it came
// compressed.
func (m *rawMember) next(t *testing.T) ([]byte, bool) {
	t.Helper()
	_ = m.nc.SetReadDeadline(time.Now().Add(waitFor))
	f, err := ws.ReadFrame(m.br)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	compressed, err := wsflate.IsCompressed(f.Header)
	if err != nil {
		t.Fatal(err)
	}
	if compressed {
		if f, err = wsflate.DecompressFrame(f); err != nil {
			t.Fatalf("inflate: %v", err)
		}
	}
	return f.Payload, compressed
}

// A group, user or broadcast message reaches members that negotiated
// permessage-deflate compressed, and the others plain, with the same
// payload; the node compresses it once, whatever the number of members.
func TestFanOutToMixedMembersIsCompressedOnce(t *testing.T) {
	testFanOutCompressedOnce(t, Config{NodeID: "n1", Workers: 1})
}

// The same when each member is written by a fan-out writer of its own: the
// writers share one frame, and whichever comes first compresses it.
func TestFanOutSharedAmongWritersIsCompressedOnce(t *testing.T) {
	testFanOutCompressedOnce(t, Config{NodeID: "n1", Workers: 1, FanoutWriters: 4, FanoutMinShare: 1})
}

func testFanOutCompressedOnce(t *testing.T, cfg Config) {
	nt := testenv.StartNATS(t)
	reg := prometheus.NewRegistry()
	svc, err := New(cfg, Deps{NC: nt.Connect(t), Store: NewMemoryStore(), Registerer: reg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := edge.New(edge.Config{Listen: "127.0.0.1:0", DrainWindow: 10 * time.Millisecond, Compression: true},
		edge.Options{NodeID: "n1", Handler: &testHandler{svc: svc, node: "n1", reg: cluster.NewMemoryRegistry(nil)}, Registerer: reg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = svc.Run(context.Background()) }()
	go func() { defer wg.Done(); _ = srv.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, edge.ErrClosed) {
			t.Errorf("edge shutdown: %v", err)
		}
		_ = svc.Shutdown(ctx)
		wg.Wait()
	})

	offer := ws.Dialer{Extensions: []httphead.Option{wsflate.DefaultParameters.Option()}}
	dial := func(d ws.Dialer) *rawMember {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		nc, br, hs, err := d.Dial(ctx, "ws://"+srv.Addr().String()+"/?user=alice&groups=room")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		if br == nil {
			br = bufio.NewReader(nc)
		}
		m := &rawMember{Handshake: hs, br: br, nc: nc}
		if id, _ := m.next(t); !strings.HasPrefix(string(id), "id:") {
			t.Fatalf("first message %q, want the connection ID", id)
		}
		return m
	}
	members := []*rawMember{dial(offer), dial(offer), dial(ws.Dialer{}), dial(ws.Dialer{})}
	compressedMember := func(i int) bool { return i < 2 }
	for i, m := range members {
		if got := len(m.Extensions) > 0; got != compressedMember(i) {
			t.Fatalf("member %d negotiated compression: %v, want %v", i, got, compressedMember(i))
		}
	}
	eventually(t, "four members", func() bool { return svc.idx.members(svc.subj.groupSubject("room")) == 4 })

	msg := []byte(strings.Repeat(`{"user":"bob","text":"hi all","room":"lobby"},`, 24))
	ctx := context.Background()
	sends := map[string]func() error{
		"group":     func() error { return svc.SendGroup(ctx, "room", msg, false, "") },
		"user":      func() error { return svc.SendUser(ctx, "alice", msg, false) },
		"broadcast": func() error { return svc.Broadcast(ctx, msg, false) },
	}
	for _, kind := range []string{"group", "user", "broadcast"} {
		before := outPlainBytes(t, reg)
		if err := sends[kind](); err != nil {
			t.Fatalf("%s send: %v", kind, err)
		}
		for i, m := range members {
			got, compressed := m.next(t)
			if !bytes.Equal(got, msg) {
				t.Fatalf("%s: member %d got %d bytes, want the %d sent", kind, i, len(got), len(msg))
			}
			if compressed != compressedMember(i) {
				t.Fatalf("%s: member %d compressed %v, want %v", kind, i, compressed, compressedMember(i))
			}
		}
		if n := outPlainBytes(t, reg) - before; n != float64(len(msg)) {
			t.Fatalf("%s: the node compressed %v bytes for two members, want %d (once)", kind, n, len(msg))
		}
	}
}

func outPlainBytes(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	return counterValue(t, reg, "switchboard_compression_plain_bytes_total", "direction", "out")
}
