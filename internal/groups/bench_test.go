package groups

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// benchHandler puts every connection in group "bench", or the one its
// query names (?sink).
type benchHandler struct{ svc *Service }

func (h benchHandler) Connect(_ context.Context, _ *edge.Conn, r *edge.Request) (*edge.Accept, error) {
	g := "bench"
	if r.RawQuery != "" {
		g = r.RawQuery
	}
	return &edge.Accept{Value: g}, nil
}
func (h benchHandler) Open(c *edge.Conn)                                       { _ = h.svc.Track(c, "", []string{c.Value().(string)}) }
func (h benchHandler) Message(*edge.Conn, []byte, bool)                        {}
func (h benchHandler) Close(c *edge.Conn, _ int, _ string, _ edge.CloseReason) { h.svc.Untrack(c.ID()) }

// countFrames reads server frames from r and adds each complete one to n.
// It allocates nothing per frame, so the allocations measured are the edge's.
func countFrames(r io.Reader, n *atomic.Int64) {
	buf := make([]byte, 256<<10)
	have := 0
	for {
		m, err := r.Read(buf[have:])
		if err != nil {
			return
		}
		have += m
		off, frames := 0, int64(0)
		for {
			rest := buf[off:have]
			if len(rest) < 2 {
				break
			}
			hdr, l := 2, int(rest[1]&0x7f)
			switch l {
			case 126:
				if len(rest) < 4 {
					break
				}
				hdr, l = 4, int(binary.BigEndian.Uint16(rest[2:]))
			case 127:
				if len(rest) < 10 {
					break
				}
				hdr, l = 10, int(binary.BigEndian.Uint64(rest[2:]))
			}
			if len(rest) < hdr || len(rest) < hdr+l {
				break
			}
			off += hdr + l
			frames++
		}
		have = copy(buf, buf[off:have])
		n.Add(frames)
	}
}

// BenchmarkGroupFanout measures delivery to the local members of one group on
// one edge: 1,000 real WebSocket clients on loopback sockets, each reading in
// the background. It reports frames delivered per second on this edge, heap
// allocations per delivered frame, CPU time per delivered frame and the cores
// kept busy (CPU time over wall time); all of the whole process, clients
// included. On a shared machine frames/s follows the CPU the process gets;
// cpu-ns/frame does much less.
//
//	nats:  each op is one SendGroup → one NATS publish → every member
//	       (bursts are coalesced into one write per member)
//	local: each op is one message handed straight to the delivery path,
//	       one write per member (no NATS, no coalescing), the members
//	       shared among the fan-out writers (GOMAXPROCS of them)
//	serial: the same, written by the delivery worker alone, as a group
//	       below the FanoutMinShare threshold is
//	write, write-serial: local and serial to another 1,000 members whose
//	       clients read only while the timer is stopped (every 32
//	       messages): the edge's side alone, what a node pays per member
//	       when its clients are on other machines
func BenchmarkGroupFanout(b *testing.B) {
	const members = 1000
	nt := testenv.StartNATS(b)
	nc := nt.Connect(b)
	svc, err := New(Config{NodeID: "bench"}, Deps{NC: nc, Store: NewMemoryStore(), Registerer: prometheus.NewRegistry(), Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := edge.New(edge.Config{Listen: "127.0.0.1:0", MaxQueueBytes: 64 << 20, DrainWindow: 10 * time.Millisecond},
		edge.Options{NodeID: "bench", Handler: benchHandler{svc}, Registerer: prometheus.NewRegistry(), Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = svc.Run(context.Background()) }()
	go func() { defer wg.Done(); _ = srv.Run(context.Background()) }()
	var received atomic.Int64
	conns := make([]net.Conn, 0, members)
	for range members {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		c, br, _, err := ws.Dial(ctx, "ws://"+srv.Addr().String()+"/")
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		var r io.Reader = c
		if br != nil {
			r = br
		}
		wg.Add(1)
		go func() { defer wg.Done(); countFrames(r, &received) }()
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = svc.Shutdown(ctx)
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	subject := svc.subj.groupSubject("bench")
	eventually(b, "every client to join", func() bool { return svc.idx.members(subject) == members })
	payload := make([]byte, 64)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}

	run := func(b *testing.B, send func()) {
		start := received.Load()
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		cpu0 := cpuTime()
		b.ResetTimer()
		t0 := time.Now()
		for range b.N {
			send()
		}
		want := start + int64(b.N)*members
		deadline := time.Now().Add(2 * time.Minute)
		for received.Load() < want && time.Now().Before(deadline) {
			time.Sleep(100 * time.Microsecond)
		}
		el := time.Since(t0)
		cpu := cpuTime() - cpu0
		b.StopTimer()
		runtime.ReadMemStats(&ms1)
		got := received.Load() - start
		if got < int64(b.N)*members {
			b.Fatalf("delivered %d of %d frames", got, int64(b.N)*members)
		}
		b.ReportMetric(float64(got)/el.Seconds(), "frames/s")
		b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(got), "allocs/frame")
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(got), "cpu-ns/frame")
		b.ReportMetric(cpu.Seconds()/el.Seconds(), "cores")
	}
	b.Run("nats", func(b *testing.B) {
		run(b, func() {
			if err := svc.SendGroup(context.Background(), "bench", payload, false, ""); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("local", func(b *testing.B) {
		d := svc.newDeliverer()
		msg := &nats.Msg{Subject: subject, Data: encodeSend(payload, false, "")}
		batch := []*nats.Msg{msg}
		run(b, func() { d.deliver(batch) })
	})
	// The sink's clients read nothing while timed: a message is 66 bytes
	// on the wire, and 32 of them fit in a loopback socket's buffers.
	const sinkEvery, frameLen = 32, 2 + 64
	var sink []net.Conn
	for range members {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		c, br, _, err := ws.Dial(ctx, "ws://"+srv.Addr().String()+"/?sink")
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if br != nil && br.Buffered() > 0 {
			b.Fatal("sink: bytes before any message")
		}
		sink = append(sink, c)
		conns = append(conns, c)
	}
	sinkSubject := svc.subj.groupSubject("sink")
	eventually(b, "every sink client to join", func() bool { return svc.idx.members(sinkSubject) == members })
	writeOnly := func(b *testing.B, d *deliverer) {
		batch := []*nats.Msg{{Subject: sinkSubject, Data: encodeSend(payload, false, "")}}
		buf := make([]byte, sinkEvery*frameLen)
		drain := func(n int) {
			for _, c := range sink {
				_ = c.SetReadDeadline(time.Now().Add(waitFor))
				if _, err := io.ReadFull(c, buf[:n*frameLen]); err != nil {
					b.Fatalf("sink: %v", err)
				}
			}
		}
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		var cpu time.Duration
		b.ResetTimer()
		cpu0 := cpuTime()
		for i := range b.N {
			d.deliver(batch)
			if i%sinkEvery == sinkEvery-1 || i == b.N-1 {
				cpu += cpuTime() - cpu0
				b.StopTimer()
				drain(i%sinkEvery + 1)
				b.StartTimer()
				cpu0 = cpuTime()
			}
		}
		b.StopTimer()
		runtime.ReadMemStats(&ms1)
		frames := float64(b.N) * members
		b.ReportMetric(frames/b.Elapsed().Seconds(), "frames/s")
		b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/frames, "allocs/frame")
		b.ReportMetric(float64(cpu.Nanoseconds())/frames, "cpu-ns/frame")
		b.ReportMetric(cpu.Seconds()/b.Elapsed().Seconds(), "cores")
	}
	b.Run("write", func(b *testing.B) { writeOnly(b, svc.newDeliverer()) })
	b.Run("write-serial", func(b *testing.B) { writeOnly(b, &deliverer{s: svc}) })
	b.Run("serial", func(b *testing.B) {
		d := &deliverer{s: svc}
		msg := &nats.Msg{Subject: subject, Data: encodeSend(payload, false, "")}
		batch := []*nats.Msg{msg}
		run(b, func() { d.deliver(batch) })
	})
}

// BenchmarkShareHandoff measures what splitting a message costs by itself:
// 128 members whose SendFrame does nothing, written by the delivery worker
// alone (serial) or in two shares of 64 (shared: one hand-off to a writer
// goroutine and the wait for it). The difference is the price of a share,
// to set against a share's real writes (≈ 10 µs each on this machine,
// BenchmarkGroupFanout's cpu-ns/frame).
func BenchmarkShareHandoff(b *testing.B) {
	svc, err := New(Config{NodeID: "bench", FanoutWriters: 2, FanoutMinShare: 64}, Deps{NC: testenv.StartNATS(b).Connect(b),
		Store: NewMemoryStore(), Registerer: prometheus.NewRegistry(), Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = svc.Run(context.Background()) }()
	b.Cleanup(func() { _ = svc.Shutdown(context.Background()) })
	for i := range 128 {
		if err := svc.Track(fakeConn(fmt.Sprintf("conn%012d", i)), "", []string{"g"}); err != nil {
			b.Fatal(err)
		}
	}
	<-svc.started
	batch := []*nats.Msg{{Subject: svc.subj.groupSubject("g"), Data: encodeSend([]byte("x"), false, "")}}
	for _, tc := range []struct {
		name string
		d    *deliverer
	}{{"serial", &deliverer{s: svc}}, {"shared", svc.newDeliverer()}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				tc.d.deliver(batch)
			}
		})
	}
}
