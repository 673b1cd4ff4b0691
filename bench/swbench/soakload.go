package swbench

// The soak scenario's moving parts: the swload waves, the paced API calls
// through the router, the recorder on NATS, and the redis-server and NATS
// server it runs on.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/bench/swload"
	"github.com/switchboardgw/switchboard/pkg/connections"
	"github.com/switchboardgw/switchboard/pkg/protocol"
)

type clientTotals struct {
	mu sync.Mutex
	v  SoakClients
}

func (t *clientTotals) add(r swload.Result, failed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.v.Waves++
	if failed {
		t.v.WaveErrors++
		return
	}
	t.v.Opened += r.Opened
	t.v.Failed += r.Failed
	t.v.Sent += r.Sent
	t.v.Received += r.Received
	t.v.ClosedByServer += r.ClosedByServer
	t.v.RTTP99 = max(t.v.RTTP99, r.RTT.P99)
}

func (t *clientTotals) get() SoakClients {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.v
}

// runWaves starts a swload process every WaveEvery until runCtx ends, and
// waits for them all to finish; ctx (the whole run) cancels them.
func runWaves(runCtx, ctx context.Context, c SoakConfig, targets string, totals *clientTotals) {
	n := c.perWave()
	sendFor := c.Lifetime - c.WaveEvery
	// Lifetime/WaveEvery waves overlap, Lifetime/WaveEvery - 1 of them
	// sending at a time.
	msgRate := c.MsgRate * c.WaveEvery.Seconds() / sendFor.Seconds()
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(c.WaveEvery)
	defer t.Stop()
	for i := 0; ; i++ {
		cmd := c.Swload
		cmd.Argv = append(append([]string(nil), cmd.Argv...),
			"-json", "-mode", "echo", "-target", targets,
			// Source addresses rotate so no address pair runs out of ports.
			"-src", "127.0.0."+strconv.Itoa(2+i%200),
			"-n", strconv.Itoa(n), "-rate", strconv.FormatFloat(float64(n)/c.WaveEvery.Seconds(), 'f', 1, 64),
			"-concurrency", "64", "-duration", sendFor.String(),
			"-msg-rate", strconv.FormatFloat(max(msgRate, 0.1), 'f', 2, 64),
			"-handshake-timeout", "5s", "-max-duration", (c.Lifetime + 2*time.Minute).String())
		p, err := start(fmt.Sprintf("swload[%d]", i), cmd, nil)
		if err != nil {
			fmt.Fprintln(c.Log, err)
			totals.add(swload.Result{}, true)
		} else {
			wg.Go(func() { totals.add(awaitWave(ctx, p, c.Log)) })
		}
		select {
		case <-t.C:
		case <-runCtx.Done():
			return
		}
	}
}

// awaitWave waits for one swload process to end by itself and reads its
// result.
func awaitWave(ctx context.Context, p *proc, log io.Writer) (swload.Result, bool) {
	select {
	case <-p.waited:
	case <-ctx.Done():
	}
	if err := p.stop(30 * time.Second); err != nil {
		fmt.Fprintln(log, err)
		return swload.Result{}, true
	}
	var r swload.Result
	if err := json.Unmarshal(p.stdout.Bytes(), &r); err != nil {
		fmt.Fprintf(log, "swbench: %s result: %v; stderr:\n%s\n", p.name, err, p.tail.String())
		return r, true
	}
	return r, false
}

type apiCounters struct {
	posts, gone, postErrs, groups, groupErrs, skipped atomic.Int64
	logged                                            atomic.Int32
}

func (a *apiCounters) get() SoakAPI {
	return SoakAPI{Posts: a.posts.Load(), PostsGone: a.gone.Load(), PostErrors: a.postErrs.Load(),
		GroupSends: a.groups.Load(), GroupErrs: a.groupErrs.Load(), Skipped: a.skipped.Load()}
}

// logErr prints the first few API errors, so a failing run says why.
func (a *apiCounters) logErr(log io.Writer, what string, err error) {
	if a.logged.Add(1) <= 5 {
		fmt.Fprintf(log, "soak: %s: %v\n", what, err)
	}
}

// paced calls f rate times a second, at most 16 at once (a tick that finds
// them all busy is skipped and counted), until ctx ends; it waits for the
// calls in flight.
func paced(ctx context.Context, rate float64, skipped *atomic.Int64, f func()) {
	if rate <= 0 {
		return
	}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		select {
		case sem <- struct{}{}:
			wg.Go(func() {
				defer func() { <-sem }()
				f()
			})
		default:
			skipped.Add(1)
		}
	}
}

// runPosts posts to random live connections through the router.
func runPosts(ctx context.Context, rate float64, ledger *EventLedger, api *connections.Client, a *apiCounters, log io.Writer) {
	var seq atomic.Int64
	paced(ctx, rate, &a.skipped, func() {
		id := ledger.Pick()
		if id == "" {
			return
		}
		err := api.PostText(context.Background(), id, []byte("post "+strconv.FormatInt(seq.Add(1), 10)))
		a.posts.Add(1)
		switch {
		case err == nil:
		case errors.Is(err, connections.ErrGone):
			a.gone.Add(1)
		default:
			a.postErrs.Add(1)
			a.logErr(log, "post", err)
		}
	})
}

// runGroupSends sends to the groups in turn through the router.
func runGroupSends(ctx context.Context, c SoakConfig, api *connections.Client, a *apiCounters, log io.Writer) {
	var seq atomic.Int64
	paced(ctx, c.GroupRate, &a.skipped, func() {
		k := seq.Add(1)
		err := api.SendToGroup(context.Background(), soakGroup(int(k)%c.Groups), []byte("group "+strconv.FormatInt(k, 10)), "")
		a.groups.Add(1)
		if err != nil {
			a.groupErrs.Add(1)
			a.logErr(log, "group send", err)
		}
	})
}

func soakGroup(i int) string { return "soak-" + strconv.Itoa(i) }

// soakRecorder is the cluster's backend: it answers $connect (putting each
// connection in one group), answers the two-way "echo" route with the
// message's body, and feeds every lifecycle and MESSAGE event to the ledger.
// Its subscriptions share one channel, so events reach the ledger in the
// order the NATS connection received them (per-subscription callbacks
// would each run on their own goroutine and could reorder a connection's
// CONNECT, MESSAGE and DISCONNECT).
type soakRecorder struct {
	nc   *nats.Conn
	ch   chan *nats.Msg
	quit chan struct{}
	done chan struct{}
	lost atomic.Int64
}

func startSoakRecorder(natsURL, prefix string, groups int, ledger *EventLedger) (*soakRecorder, error) {
	r := &soakRecorder{ch: make(chan *nats.Msg, 1<<18), quit: make(chan struct{}), done: make(chan struct{})}
	nc, err := nats.Connect(natsURL, nats.Name("swbench-soak-recorder"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				r.lost.Add(1)
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("swbench: soak recorder: connect %s: %w", natsURL, err)
	}
	r.nc = nc
	subjects := protocol.NewSubjects(prefix)
	for _, subj := range []string{subjects.Connect, subjects.EventConnect, subjects.EventDisconnect, subjects.Route(">")} {
		if _, err := nc.ChanSubscribe(subj, r.ch); err != nil {
			nc.Close()
			return nil, fmt.Errorf("swbench: soak recorder: subscribe %s: %w", subj, err)
		}
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("swbench: soak recorder: flush: %w", err)
	}
	go func() { // owned by r: close ends it and waits
		defer close(r.done)
		for {
			select {
			case m := <-r.ch:
				r.handle(m, subjects, groups, ledger)
			case <-r.quit:
				return
			}
		}
	}()
	return r, nil
}

func (r *soakRecorder) handle(m *nats.Msg, subj protocol.Subjects, groups int, ledger *EventLedger) {
	id := m.Header.Get(protocol.HeaderConnID)
	switch {
	case m.Subject == subj.Connect:
		h := fnv.New32a()
		_, _ = h.Write([]byte(id))
		_ = m.Respond([]byte(`{"groups":["` + soakGroup(int(h.Sum32()%uint32(groups))) + `"]}`))
	case m.Subject == subj.EventConnect:
		ledger.Connect(id)
	case m.Subject == subj.EventDisconnect:
		ledger.Disconnect(id)
	default: // a MESSAGE event
		ledger.Message(id)
		if m.Reply != "" && m.Header.Get(protocol.HeaderOneWay) != "true" {
			var ev struct {
				Body string `json:"body"`
			}
			if json.Unmarshal(m.Data, &ev) == nil {
				_ = m.Respond([]byte(ev.Body))
			}
		}
	}
}

func (r *soakRecorder) close() {
	r.nc.Close()
	// r.ch is never closed: nats.go owns the sending side.
	close(r.quit)
	<-r.done
}

// startRedis runs redis-server on a free loopback port, persisting nothing,
// and waits until it answers PING.
func startRedis(ctx context.Context, bin, dir string) (string, func(), error) {
	p, addr, err := startRedisProc(ctx, bin, dir)
	if err != nil {
		return "", nil, err
	}
	return addr, func() { _ = p.stop(10 * time.Second) }, nil
}

// startRedisProc is startRedis returning the process (whose CPU and
// memory a benchmark reads).
func startRedisProc(ctx context.Context, bin, dir string) (*proc, string, error) {
	if _, err := exec.LookPath(bin); err != nil {
		return nil, "", fmt.Errorf("swbench: redis-server needed (-redis-server): %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	p, err := start("redis-server", Command{Argv: []string{bin, "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", dir}}, nil)
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(15 * time.Second)
	for !redisPing(addr) {
		if p.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.stop(10 * time.Second)
			return nil, "", fmt.Errorf("swbench: redis-server on %s not answering; stderr:\n%s", addr, p.tail.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p, addr, nil
}

func redisPing(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.TrimSpace(line) == "+PONG"
}

// startNATS runs the nats-server binary on a free loopback port or, when
// there is none, a NATS server inside the driver, and waits until it
// accepts clients.
func startNATS(ctx context.Context, bin string) (string, func(), error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	url := "nats://" + addr
	if path, lerr := exec.LookPath(bin); bin != "" && lerr == nil {
		p, err := startNATSProc(ctx, path, addr)
		if err != nil {
			return "", nil, err
		}
		return url, func() { _ = p.stop(10 * time.Second) }, nil
	}
	pn, _ := strconv.Atoi(port)
	srv, err := natsserver.NewServer(&natsserver.Options{Host: host, Port: pn, NoLog: true, NoSigs: true})
	if err != nil {
		return "", nil, fmt.Errorf("swbench: nats server: %w", err)
	}
	go srv.Start() // Start returns once it listens; Shutdown waits for the server's goroutines
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return "", nil, fmt.Errorf("swbench: nats server on %s not ready", addr)
	}
	return url, func() { srv.Shutdown(); srv.WaitForShutdown() }, nil
}

// startNATSProc runs the nats-server binary at path on addr and waits until
// it accepts clients.
func startNATSProc(ctx context.Context, path, addr string) (*proc, error) {
	host, port, _ := net.SplitHostPort(addr)
	p, err := start("nats-server", Command{Argv: []string{path, "-a", host, "-p", port}}, nil)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		nc, err := nats.Connect("nats://"+addr, nats.Timeout(time.Second))
		if err == nil {
			nc.Close()
			return p, nil
		}
		if p.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.stop(10 * time.Second)
			return nil, fmt.Errorf("swbench: nats-server on %s not answering: %v; stderr:\n%s", addr, err, p.tail.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
