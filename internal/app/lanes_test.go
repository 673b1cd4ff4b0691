package app

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/testenv"
	"github.com/switchboardgw/switchboard/pkg/backend"
)

// -msg-shed-close: a connection whose messages keep being shed at its own
// event queue bound (-conn-event-queue) is closed with 1008 once enough
// were; its DISCONNECT says so, and a quiet neighbour is untouched. NATS
// stops reading (a proxy in between pauses), so the edge's publisher is
// stuck and shedding is certain however fast the machine is.
func TestMsgShedCloseClosesAFloodingConnection(t *testing.T) {
	const shedClose = 20
	n := testenv.StartNATS(t)
	p := testenv.StartProxy(t, strings.TrimPrefix(n.URL(), "nats://"))
	e := startTestEdge(t, testEdgeConfig(t, "-nats-url", "nats://"+p.Addr(), "-connect-mode", "off",
		"-conn-event-queue", "1", "-msg-shed-close", fmt.Sprint(shedClose)))
	var ev *events
	startBackend(t, n.URL(), func(b *backend.Backend) { ev = recordEvents(t, b) })
	wsURL := "ws://" + e.WSAddr() + "/"
	ids := func() []string {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		var out []string
		for id := range ev.connects {
			out = append(out, id)
		}
		return out
	}
	flooder, _ := dialWS(t, wsURL, nil)
	eventually(t, "the flooder's CONNECT", func() bool { return len(ids()) == 1 })
	floodID := ids()[0]
	quiet, _ := dialWS(t, wsURL, nil)
	eventually(t, "the quiet client's CONNECT", func() bool { return len(ids()) == 2 })

	p.Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	go func() { // reads until the close (no-route error frames come before it)
		for {
			if _, _, err := flooder.Read(ctx); err != nil {
				closed <- err
				return
			}
		}
	}()
	msg := []byte(`{"action":"flood","pad":"................................................................"}`)
	sent := 0
	var err error
flood:
	for ; sent < 1_000_000; sent++ {
		select {
		case err = <-closed:
			break flood
		default:
		}
		if werr := flooder.Write(ctx, websocket.MessageText, msg); werr != nil {
			break
		}
	}
	if err == nil {
		err = <-closed
	}
	if st := websocket.CloseStatus(err); st != websocket.StatusPolicyViolation {
		t.Fatalf("flooder after %d messages: %v, want close 1008", sent, err)
	}
	p.Resume()
	eventually(t, "the flooder's DISCONNECT", func() bool { return len(ev.disconnect(floodID)) == 1 })
	if d := ev.disconnect(floodID)[0].RequestContext; d.DisconnectStatusCode != 1008 || d.DisconnectReason == nil || *d.DisconnectReason != "message queue full" {
		t.Fatalf("flooder's DISCONNECT %+v", d)
	}
	shed := gathered(t, e.Registry(), "switchboard_events_dropped_total", "reason", "conn_queue_full")
	if shed < shedClose {
		t.Fatalf("dropped{conn_queue_full} = %v, want at least %d", shed, shedClose)
	}
	// The neighbour is still served.
	if err := quiet.Write(ctx, websocket.MessageText, []byte(`{"action":"hi"}`)); err != nil {
		t.Fatalf("quiet client: %v", err)
	}
	for _, id := range ids() {
		if id != floodID && len(ev.disconnect(id)) != 0 {
			t.Fatal("the quiet client was disconnected")
		}
	}
	t.Logf("flooder closed 1008 after %d messages, %v shed", sent, shed)
}

// gathered sums the samples of a metric family whose label has value.
func gathered(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}
