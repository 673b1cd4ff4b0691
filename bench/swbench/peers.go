package swbench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboardgw/switchboard/bench/internal/defaults"
	"github.com/switchboardgw/switchboard/bench/swload"
)

// The peers scenario: Switchboard next to Centrifugo (and the goroutine
// baseline, with and without a connect backend) end to end, every part its own process on loopback, in turns,
// in one run. See docs/benchmarks.md.

// Peer scenarios, in the order they run.
const (
	PeerIdle    = "idle"
	PeerConnect = "connect"
	PeerFanout  = "fanout"
	PeerP2P     = "p2p"
)

// PeerScenarios lists every scenario.
var PeerScenarios = []string{PeerIdle, PeerConnect, PeerFanout, PeerP2P}

// PeersConfig describes a peers run. The zero value of every field means
// its default.
type PeersConfig struct {
	// Bins are the binaries. Required.
	Bins PeerBins
	// NATSCommands: Switchboard's Redis-mode systems send node commands
	// (a cross-node post) through nats-server only, as without
	// -direct-listen and -direct-commands. Default false: direct.
	NATSCommands bool
	// Systems are measured in turn, in this order. Default PeerSystems.
	Systems []string
	// Scenarios to run. Default PeerScenarios.
	Scenarios []string
	// RatioBase: ratios compare each Switchboard row with this system in
	// the same mode (switchboard-redis with RatioBase+"-redis"), other rows
	// with the first row whose system starts with this. Default
	// "centrifugo".
	RatioBase string
	// IdleConns and ConnectConns: connections of the idle and connect-rate
	// scenarios. Default 15000 each.
	IdleConns, ConnectConns int
	// PerProcess is the most connections per swload process. Default 8000,
	// so that 15,000 connections come from two processes.
	PerProcess int
	// Rate is new connections per second, all processes together, where
	// connections are opened before a measurement. Default 3000.
	Rate float64
	// Concurrency is handshakes in flight per process in the connect-rate
	// scenario. Default 256.
	Concurrency int
	// Repeat is how many rounds the connect-rate scenario runs, the
	// systems taking turns; each system's median round is reported.
	// Default 1.
	Repeat int
	// FanoutConns are the members of the fan-out group. Default 10000.
	FanoutConns int
	// Messages are sent one at a time, Interval apart. Defaults 20, 250ms.
	Messages int
	Interval time.Duration
	// Bursts of BurstSize messages each, sent at once, Interval*4 apart.
	// Defaults 5 and 20.
	Bursts, BurstSize int
	// P2PConns clients on the second node receive Posts posts made through
	// the first node (or the router) at PostRate per second. Defaults 1000,
	// 5000, 1000/s.
	P2PConns int
	Posts    int
	PostRate float64
	// Size is the size of each message body, bytes. Default 64.
	Size int
	// Settle is the wait between the connections being open and the idle
	// measurement. Default 2s.
	Settle time.Duration
	// ProfileDir, when set, receives each node's CPU profile taken over
	// the fan-out bursts (<system>-<node>-bursts.pprof, from the node's
	// /debug/pprof/profile).
	ProfileDir string
	// Log receives progress lines. Default: discarded.
	Log io.Writer
}

func (c PeersConfig) withDefaults() PeersConfig {
	if len(c.Systems) == 0 {
		c.Systems = PeerSystems
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = PeerScenarios
	}
	defaults.Set(&c.RatioBase, SysCentrifugo)
	defaults.Set(&c.IdleConns, 15000)
	defaults.Set(&c.ConnectConns, 15000)
	defaults.Set(&c.PerProcess, 8000)
	defaults.Set(&c.Rate, 3000)
	defaults.Set(&c.Concurrency, 256)
	defaults.Set(&c.Repeat, 1)
	defaults.Set(&c.FanoutConns, 10000)
	defaults.Set(&c.Messages, 20)
	defaults.Set(&c.Interval, 250*time.Millisecond)
	defaults.Set(&c.Bursts, 5)
	defaults.Set(&c.BurstSize, 20)
	defaults.Set(&c.P2PConns, 1000)
	defaults.Set(&c.Posts, 5000)
	defaults.Set(&c.PostRate, 1000)
	defaults.Set(&c.Size, 64)
	defaults.Set(&c.Settle, 2*time.Second)
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c
}

// Validate reports whether the config (after defaults) can run.
func (c PeersConfig) Validate() error {
	d := c.withDefaults()
	for _, s := range d.Systems {
		if !slices.Contains(PeerSystems, s) {
			return fmt.Errorf("%w: unknown system %q (%s)", ErrConfig, s, strings.Join(PeerSystems, ", "))
		}
	}
	for _, s := range d.Scenarios {
		if !slices.Contains(PeerScenarios, s) {
			return fmt.Errorf("%w: unknown scenario %q (%s)", ErrConfig, s, strings.Join(PeerScenarios, ", "))
		}
	}
	if d.IdleConns < 1 || d.ConnectConns < 1 || d.FanoutConns < 1 || d.P2PConns < 1 || d.PerProcess < 1 ||
		d.Messages < 1 || d.Bursts < 1 || d.BurstSize < 1 || d.Posts < 1 || d.PostRate <= 0 || d.Rate <= 0 ||
		d.Concurrency < 1 || d.Repeat < 1 || d.Interval <= 0 || d.Settle < 0 {
		return fmt.Errorf("%w: counts, rates and the interval must be positive", ErrConfig)
	}
	// One process receives every post, so its expected count is exact.
	if d.P2PConns > d.PerProcess {
		return fmt.Errorf("%w: p2p connections (%d) must fit one swload process (%d)", ErrConfig, d.P2PConns, d.PerProcess)
	}
	if procs := (max(d.IdleConns, d.ConnectConns, d.FanoutConns) + d.PerProcess - 1) / d.PerProcess; procs > 250 {
		return fmt.Errorf("%w: %d swload processes needed; at most 250 source addresses", ErrConfig, procs)
	}
	if d.Size < 32 || d.Size > 64<<10 {
		return fmt.Errorf("%w: message size must be 32..65536 bytes", ErrConfig)
	}
	return nil
}

// PeersReport holds every table of a run.
type PeersReport struct {
	Idle    []PeerIdleRow    `json:"idle,omitempty"`
	Connect []PeerConnectRow `json:"connect,omitempty"`
	Fanout  []PeerFanoutRow  `json:"fanout,omitempty"`
	P2P     []PeerP2PRow     `json:"p2p,omitempty"`
}

// PeerIdleRow is one system's idle-memory figures. NodeRSS is the
// WebSocket process's (the one the clients are connected to); AllRSS adds
// every process of the system (Redis, NATS, router, authorizer).
type PeerIdleRow struct {
	System         string  `json:"system"`
	Conns          int     `json:"connections"`
	Failed         int     `json:"failed"`
	NodeRSSPerConn float64 `json:"nodeRssPerConnBytes"`
	AllRSSPerConn  float64 `json:"allRssPerConnBytes"`
	// HeapPerConn and GoroutinesPerConn are from the node's /metrics
	// (go_memstats_heap_inuse_bytes, go_goroutines); GoKnown is false
	// when it does not expose them.
	HeapPerConn       float64 `json:"heapPerConnBytes"`
	GoroutinesPerConn float64 `json:"goroutinesPerConn"`
	GoKnown           bool    `json:"goKnown"`
	NodeRSSRatio      float64 `json:"nodeRssRatio"`
	AllRSSRatio       float64 `json:"allRssRatio"`
}

// PeerConnectRow is one system's connect-rate figures.
type PeerConnectRow struct {
	System    string        `json:"system"`
	Conns     int           `json:"connections"`
	Failed    int           `json:"failed"`
	PerSecond float64       `json:"connectsPerSec"`
	P50       time.Duration `json:"p50Ns"`
	P99       time.Duration `json:"p99Ns"`
	Ratio     float64       `json:"rateRatio"`
	// Over Runs rounds: the row is the median round; Min and Max are the
	// extreme rates.
	Runs int     `json:"runs"`
	Min  float64 `json:"minConnectsPerSec"`
	Max  float64 `json:"maxConnectsPerSec"`
}

// PeerFanoutRow is one system's fan-out figures for one way of sending.
type PeerFanoutRow struct {
	System   string `json:"system"`
	Phase    string `json:"phase"`
	Members  int    `json:"members"`
	Messages int    `json:"messages"`
	SendErrs int    `json:"sendErrors"`
	Expected int64  `json:"expectedFrames"`
	Received int64  `json:"receivedFrames"`
	// P50 and P99: publish (the API call starting) to receipt, the worst
	// swload process's.
	P50          time.Duration `json:"p50Ns"`
	P99          time.Duration `json:"p99Ns"`
	FramesPerSec float64       `json:"framesPerSec"`
	// SystemCPU is the CPU time of all the system's processes from the
	// first send to the last receipt; ClientCPU the swload processes'.
	// Clients near the machine's cores times the span mean the clients,
	// not the system, bound the rate.
	SystemCPU      time.Duration `json:"systemCpuNs"`
	ClientCPU      time.Duration `json:"clientCpuNs"`
	FramesPerSecRt float64       `json:"framesPerSecRatio"`
	P99Ratio       float64       `json:"p99Ratio"`

	// Received counts publications, not WebSocket frames: a Centrifugo
	// frame may carry several, one JSON line each, and the client counts
	// each line. FramesPerSec spans the whole phase, pauses between
	// bursts included, so for bursts it is bounded by the schedule
	// (Bursts × BurstSize × Members over about (Bursts − 1) × 4 ×
	// Interval), not by the system.
	//
	// Busy is the time the system was delivering: the union over bursts
	// (one message is a burst of one) of [its first send, its last
	// receipt at any member]. DeliveryRate is the publications received
	// over Busy, the throughput figure; BurstP50 and BurstMax are the
	// times from a burst's first send to its last receipt.
	Busy         time.Duration `json:"busyNs"`
	DeliveryRate float64       `json:"publicationsPerBusySec"`
	BurstP50     time.Duration `json:"burstDeliveryP50Ns"`
	BurstMax     time.Duration `json:"burstDeliveryMaxNs"`
	// CPUPer1000 is the system's CPU time (every process, user + system)
	// per 1,000 publications received; CPUByProc splits it. ClientPer1000
	// is the same for the swload processes, ClientProcs of them;
	// ClientCores is their CPU over Busy (near the machine's cores: the
	// clients bound the rate).
	CPUPer1000    time.Duration            `json:"cpuPer1000Ns"`
	CPUByProc     map[string]time.Duration `json:"cpuPer1000ByProcessNs"`
	ClientPer1000 time.Duration            `json:"clientCpuPer1000Ns"`
	ClientProcs   int                      `json:"clientProcesses"`
	ClientCores   float64                  `json:"clientCores"`
	// What the clients read, all phase long: WebSocket messages and bytes
	// per publication, publications per read(2).
	WSMsgsPerPub float64 `json:"wsMessagesPerPublication"`
	BytesPerPub  float64 `json:"bytesPerPublication"`
	PubsPerRead  float64 `json:"publicationsPerRead"`
	DeliveryRt   float64 `json:"deliveryRateRatio"`
	CPURatio     float64 `json:"cpuRatio"`
}

// PeerP2PRow is one system's cross-node point-to-point figures.
type PeerP2PRow struct {
	System   string        `json:"system"`
	Conns    int           `json:"connections"`
	Posts    int           `json:"posts"`
	PostErrs int           `json:"postErrors"`
	HTTPP50  time.Duration `json:"httpP50Ns"`
	HTTPP99  time.Duration `json:"httpP99Ns"`
	Received int64         `json:"received"`
	RecvP50  time.Duration `json:"receiptP50Ns"`
	RecvP99  time.Duration `json:"receiptP99Ns"`
	// CPUPer1000 is the CPU time of all the system's processes (user +
	// system, from /proc/<pid>/stat) per 1,000 posts; CPUByProc splits it.
	CPUPer1000 time.Duration            `json:"cpuPer1000PostsNs"`
	CPUByProc  map[string]time.Duration `json:"cpuPer1000PostsByProcessNs"`
	CPURatio   float64                  `json:"cpuRatio"`
	HTTPP99Rt  float64                  `json:"httpP99Ratio"`
	// The machine's floor while the posts ran (floor.go): one loopback
	// round trip between two other processes, and the share of CPU time
	// the hypervisor stole.
	FloorP50 time.Duration `json:"floorRoundTripP50Ns"`
	FloorP99 time.Duration `json:"floorRoundTripP99Ns"`
	Steal    float64       `json:"stealShare"`
}

// RunPeers runs every scenario on every system in turn. Each scenario
// starts each system afresh. A system that fails a scenario is reported in
// the error and the run goes on with the others.
func RunPeers(ctx context.Context, c PeersConfig) (PeersReport, error) {
	var rep PeersReport
	if err := c.Validate(); err != nil {
		return rep, err
	}
	c = c.withDefaults()
	dir, err := os.MkdirTemp("", "swbench-peers-")
	if err != nil {
		return rep, fmt.Errorf("swbench: %w", err)
	}
	if c.ProfileDir != "" {
		if err := os.MkdirAll(c.ProfileDir, 0o755); err != nil {
			return rep, fmt.Errorf("swbench: profile dir: %w", err)
		}
	}
	defer os.RemoveAll(dir)
	var errs []error
	for _, sc := range c.Scenarios {
		rounds := 1
		if sc == PeerConnect {
			rounds = c.Repeat
		}
		for round := range rounds {
			for _, sys := range c.Systems {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				if !peerRuns(sc, sys) {
					continue
				}
				fmt.Fprintf(c.Log, "== %s: %s (round %d of %d)\n", sc, sys, round+1, rounds)
				if err := runPeer(ctx, c, sc, sys, dir, &rep); err != nil {
					errs = append(errs, fmt.Errorf("swbench: peers %s %s: %w", sc, sys, err))
					fmt.Fprintln(c.Log, errs[len(errs)-1])
				}
			}
		}
	}
	rep.Connect = medianConnect(rep.Connect)
	rep.ratios(c.RatioBase)
	return rep, errors.Join(errs...)
}

// peerRuns says which systems a scenario applies to: the baselines have no
// groups or API, point-to-point is across nodes, and the 3-node clusters
// add nothing to the scenarios where clients use one node.
func peerRuns(scenario, system string) bool {
	three := system == SysSwitchboardRedis3 || system == SysCentrifugoRedis3
	switch scenario {
	case PeerFanout:
		return system != SysBaseline && system != SysBaselineAuth
	case PeerP2P:
		return system == SysSwitchboardRedis || system == SysCentrifugoRedis || three
	}
	return !three
}

func runPeer(ctx context.Context, c PeersConfig, scenario, system, dir string, rep *PeersReport) (err error) {
	d, err := startDeployment(ctx, system, c.Bins, dir, c.NATSCommands, c.Log)
	if err != nil {
		return err
	}
	defer func() {
		if serr := d.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	switch scenario {
	case PeerIdle:
		row, err := peerIdle(ctx, c, d)
		if err != nil {
			return err
		}
		rep.Idle = append(rep.Idle, row)
	case PeerConnect:
		row, err := peerConnect(ctx, c, d)
		if err != nil {
			return err
		}
		rep.Connect = append(rep.Connect, row)
	case PeerFanout:
		for _, burst := range []bool{false, true} {
			row, err := peerFanout(ctx, c, d, burst)
			if err != nil {
				return err
			}
			rep.Fanout = append(rep.Fanout, row)
		}
	case PeerP2P:
		row, err := peerP2P(ctx, c, d)
		if err != nil {
			return err
		}
		rep.P2P = append(rep.P2P, row)
	}
	return nil
}

// peerLoaders starts swload processes for n connections to targets with
// the system's flags for group plus extra; "-index-base" gives each process
// its own range of connection indexes.
func peerLoaders(c PeersConfig, d *deployment, n int, targets []string, group string, extra func(n int) []string) ([]*proc, error) {
	lc := Config{Swload: Command{Argv: []string{c.Bins.Swload}}, Conns: n, PerProcess: c.PerProcess}
	base := 0
	return loaders(lc, strings.Join(targets, ","), func(n int) []string {
		args := append(d.loadArgs(group), "-index-base", strconv.Itoa(base))
		base += n
		return append(args, extra(n)...)
	})
}

// perProcRate is the connection rate of each of the processes for n.
func perProcRate(c PeersConfig, n int) string {
	procs := (n + c.PerProcess - 1) / c.PerProcess
	return strconv.FormatFloat(c.Rate/float64(procs), 'f', 1, 64)
}

// procSample is what one process costs at one moment.
type procSample struct {
	rss        []float64 // per process of the deployment
	heap, gors float64   // the first node's; NaN if it does not say
}

func samplePeer(ctx context.Context, d *deployment) (procSample, error) {
	s := procSample{heap: math.NaN(), gors: math.NaN()}
	for _, p := range d.procs {
		rss, err := ReadRSS(p.pid())
		if err != nil {
			return s, err
		}
		s.rss = append(s.rss, float64(rss))
	}
	if m, err := Scrape(ctx, "http://"+d.nodes[0].admin+"/metrics"); err == nil {
		if v, ok := m["go_memstats_heap_inuse_bytes"]; ok {
			s.heap = v
		}
		if v, ok := m["go_goroutines"]; ok {
			s.gors = v
		}
	}
	return s, nil
}

func (d *deployment) nodeIndex(n peerNode) int { return slices.Index(d.procs, n.p) }

func peerIdle(ctx context.Context, c PeersConfig, d *deployment) (PeerIdleRow, error) {
	row := PeerIdleRow{System: d.system}
	node := d.nodes[0]
	gc := func() {
		if err := forceGC(ctx, "http://"+node.admin+"/debug/pprof/heap?gc=1"); err != nil {
			fmt.Fprintf(c.Log, "%s: no forced GC (%v)\n", d.system, err)
		}
	}
	gc()
	before, err := samplePeer(ctx, d)
	if err != nil {
		return row, err
	}
	ps, err := peerLoaders(c, d, c.IdleConns, []string{node.ws}, "", func(int) []string {
		return []string{"-mode", "idle", "-rate", perProcRate(c, c.IdleConns), "-hold", "1h", "-max-duration", "2h"}
	})
	if err != nil {
		return row, err
	}
	open, err := awaitReady(ctx, ps)
	if err != nil {
		stopAll(ps)
		return row, err
	}
	fmt.Fprintf(c.Log, "%s: %d connections open; settling %v\n", d.system, open, c.Settle)
	select {
	case <-time.After(c.Settle):
	case <-ctx.Done():
		stopAll(ps)
		return row, ctx.Err()
	}
	gc()
	after, err := samplePeer(ctx, d)
	if err != nil {
		stopAll(ps)
		return row, err
	}
	results, err := finish(ps, 60*time.Second)
	if err != nil {
		return row, err
	}
	row.Conns = open
	for _, r := range results {
		row.Failed += r.Failed
	}
	if open == 0 {
		return row, errors.New("no connection opened")
	}
	n := float64(open)
	i := d.nodeIndex(node)
	row.NodeRSSPerConn = (after.rss[i] - before.rss[i]) / n
	var sum float64
	for k := range after.rss {
		sum += after.rss[k] - before.rss[k]
	}
	row.AllRSSPerConn = sum / n
	if !math.IsNaN(before.heap + after.heap + before.gors + after.gors) {
		row.GoKnown = true
		row.HeapPerConn = (after.heap - before.heap) / n
		row.GoroutinesPerConn = (after.gors - before.gors) / n
		if math.Abs(row.GoroutinesPerConn) < 0.0005 {
			row.GoroutinesPerConn = 0 // not "-0.000" when one came and went
		}
	}
	fmt.Fprintf(c.Log, "%s: node RSS %.1f → %.1f MiB\n", d.system, before.rss[i]/(1<<20), after.rss[i]/(1<<20))
	return row, nil
}

func peerConnect(ctx context.Context, c PeersConfig, d *deployment) (PeerConnectRow, error) {
	row := PeerConnectRow{System: d.system}
	ps, err := peerLoaders(c, d, c.ConnectConns, []string{d.nodes[0].ws}, "", func(int) []string {
		return []string{"-mode", "connect-rate", "-rate", "-1", "-concurrency", strconv.Itoa(c.Concurrency), "-max-duration", "30m"}
	})
	if err != nil {
		return row, err
	}
	results, err := loadersDone(ctx, ps)
	if err != nil {
		return row, err
	}
	var longest time.Duration
	for _, r := range results {
		row.Conns += r.Opened
		row.Failed += r.Failed
		longest = max(longest, r.OpenTime)
		row.P50 = max(row.P50, r.Connect.P50)
		row.P99 = max(row.P99, r.Connect.P99)
		if len(r.FailReasons) > 0 {
			fmt.Fprintf(c.Log, "%s: failures %v\n", d.system, r.FailReasons)
		}
	}
	if longest > 0 {
		row.PerSecond = float64(row.Conns) / longest.Seconds()
	}
	fmt.Fprintf(c.Log, "%s: %d connects in %v\n", d.system, row.Conns, longest.Round(time.Millisecond))
	return row, nil
}

// PeerPayload is a message body carrying its send time: {"t":<Unix ns>,
// "p":"xx…"}, padded to size bytes. swload in listen mode measures each
// message's delay from "t".
func PeerPayload(t time.Time, size int) []byte {
	b := make([]byte, 0, size+24)
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, t.UnixNano(), 10)
	b = append(b, `,"p":"`...)
	for len(b)+2 < size {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// listenLoaders opens n listening clients (spread over targets); a process
// with k of them ends once it has received expect(k) messages, or after
// hold.
func listenLoaders(ctx context.Context, c PeersConfig, d *deployment, n int, targets []string, group string, expect func(k int) int, hold time.Duration) ([]*proc, int, error) {
	ps, err := peerLoaders(c, d, n, targets, group, func(k int) []string {
		return []string{"-mode", "listen", "-rate", perProcRate(c, n), "-expect", strconv.Itoa(expect(k)),
			"-hold", hold.String(), "-max-duration", (hold + 10*time.Minute).String()}
	})
	if err != nil {
		return nil, 0, err
	}
	open, err := awaitReady(ctx, ps)
	if err != nil {
		stopAll(ps)
		return nil, 0, err
	}
	return ps, open, nil
}

// awaitMembers waits until the system counts want members in group, where
// it can count: a send must not race the last joins.
func awaitMembers(ctx context.Context, d *deployment, group string, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := d.members(ctx, group)
		if err != nil || n < 0 || n >= want {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("group %s has %d members, want %d", group, n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func peerFanout(ctx context.Context, c PeersConfig, d *deployment, burst bool) (PeerFanoutRow, error) {
	row := PeerFanoutRow{System: d.system, Phase: "one at a time", Messages: c.Messages}
	if burst {
		row.Phase = fmt.Sprintf("bursts of %d", c.BurstSize)
		row.Messages = c.Bursts * c.BurstSize
	}
	var targets []string
	for _, n := range d.nodes {
		targets = append(targets, n.ws)
	}
	sendTime := time.Duration(row.Messages) * c.Interval
	ps, open, err := listenLoaders(ctx, c, d, c.FanoutConns, targets, peerGroup,
		func(k int) int { return k * row.Messages }, sendTime+60*time.Second)
	if err != nil {
		return row, err
	}
	row.Members = open
	if err := awaitMembers(ctx, d, peerGroup, open); err != nil {
		stopAll(ps)
		return row, err
	}
	sys0, err := cpuOf(d.procs)
	if err != nil {
		stopAll(ps)
		return row, err
	}
	cli0, err := cpuOf(ps)
	if err != nil {
		stopAll(ps)
		return row, err
	}
	var sendErrs atomic.Int64
	// sent[k] holds the send times of burst k (one at a time: message k).
	var (
		sentMu sync.Mutex
		sent   [][]int64
	)
	send := func(k int) {
		now := time.Now()
		sentMu.Lock()
		sent[k] = append(sent[k], now.UnixNano())
		sentMu.Unlock()
		if err := d.send(ctx, peerGroup, PeerPayload(now, c.Size)); err != nil {
			if sendErrs.Add(1) == 1 {
				fmt.Fprintf(c.Log, "%s: send: %v\n", d.system, err)
			}
		}
	}
	var profWG sync.WaitGroup
	if burst && c.ProfileDir != "" {
		// Over the sends and a second of delivery after the last burst.
		secs := int((time.Duration(c.Bursts)*4*c.Interval + time.Second + time.Second - 1) / time.Second)
		for _, n := range d.nodes {
			profWG.Go(func() {
				path := filepath.Join(c.ProfileDir, fmt.Sprintf("%s-%s-bursts.pprof", d.system, n.p.name))
				if err := cpuProfile(ctx, n.admin, secs, path); err != nil {
					fmt.Fprintf(c.Log, "%s: %v\n", d.system, err)
				}
			})
		}
	}
	first := time.Now()
	if !burst {
		sent = make([][]int64, c.Messages)
		for k := 0; k < c.Messages && ctx.Err() == nil; k++ {
			send(k)
			sleepUntil(ctx, first.Add(time.Duration(k+1)*c.Interval))
		}
	} else {
		sent = make([][]int64, c.Bursts)
		for b := 0; b < c.Bursts && ctx.Err() == nil; b++ {
			var wg sync.WaitGroup
			for range c.BurstSize {
				wg.Go(func() { send(b) })
			}
			wg.Wait()
			sleepUntil(ctx, first.Add(time.Duration(b+1)*4*c.Interval))
		}
	}
	results, err := loadersDone(ctx, ps)
	profWG.Wait()
	if err != nil {
		return row, err
	}
	sys1, err := cpuOf(d.procs)
	if err != nil {
		return row, err
	}
	for i := range sys1 {
		row.SystemCPU += sys1[i] - sys0[i]
	}
	for i, p := range ps {
		row.ClientCPU += p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime() - cli0[i]
	}
	row.SendErrs = int(sendErrs.Load())
	row.Expected = int64(open) * int64(row.Messages)
	var last int64
	for _, r := range results {
		row.Received += r.Received
		row.P50 = max(row.P50, r.Latency.P50)
		row.P99 = max(row.P99, r.Latency.P99)
		last = max(last, r.LastRecv)
	}
	if span := time.Duration(last - first.UnixNano()); span > 0 {
		row.FramesPerSec = float64(row.Received) / span.Seconds()
	}
	var msgs, nbytes, reads int64
	for _, r := range results {
		msgs, nbytes, reads = msgs+r.WSMessages, nbytes+r.ReceivedBytes, reads+r.Reads
	}
	if row.Received > 0 && reads > 0 {
		row.WSMsgsPerPub = float64(msgs) / float64(row.Received)
		row.BytesPerPub = float64(nbytes) / float64(row.Received)
		row.PubsPerRead = float64(row.Received) / float64(reads)
	}
	bd := BurstDelivery(sent, results)
	row.Busy, row.BurstP50, row.BurstMax = bd.Busy, bd.P50, bd.Max
	if row.Busy > 0 {
		row.DeliveryRate = float64(bd.Received) / row.Busy.Seconds()
		row.ClientCores = row.ClientCPU.Seconds() / row.Busy.Seconds()
	}
	row.ClientProcs = len(ps)
	if row.Received > 0 {
		row.CPUPer1000 = time.Duration(int64(row.SystemCPU) * 1000 / row.Received)
		row.ClientPer1000 = time.Duration(int64(row.ClientCPU) * 1000 / row.Received)
		row.CPUByProc = map[string]time.Duration{}
		for i, p := range d.procs {
			row.CPUByProc[p.name] = time.Duration(int64(sys1[i]-sys0[i]) * 1000 / row.Received)
		}
	}
	fmt.Fprintf(c.Log, "%s: %s: %d/%d publications, p99 %v, %.0f/s while delivering (busy %v), CPU per 1000: system %v %v, clients %v (%d processes, %.2f cores; per publication %.2f WebSocket messages, %.0f bytes; %.1f publications per read)\n",
		d.system, row.Phase, row.Received, row.Expected, row.P99, row.DeliveryRate, row.Busy.Round(time.Millisecond),
		row.CPUPer1000, row.CPUByProc, row.ClientPer1000, row.ClientProcs, row.ClientCores, row.WSMsgsPerPub, row.BytesPerPub, row.PubsPerRead)
	return row, nil
}

// cpuProfile saves the CPU profile of the process serving pprof at admin
// over secs seconds.
func cpuProfile(ctx context.Context, admin string, secs int, path string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("swbench: profile: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("swbench: profile %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("swbench: profile %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("swbench: profile %s: %w", url, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("swbench: profile: %w", err)
	}
	return nil
}

// Delivery is how long a system took to deliver each burst to every
// member.
type Delivery struct {
	Received int64         // publications whose send time belongs to a burst
	Busy     time.Duration // the union over bursts of [first send, last receipt]
	P50, Max time.Duration // a burst's first send to its last receipt
}

// BurstDelivery matches the receipts the clients counted by send time
// (swload.Result.BySend) to the bursts those times were sent in (sent[k]:
// burst k's send times, Unix ns). Busy is a union, not a sum, so bursts
// whose deliveries overlap (a system slower than the schedule) are not
// counted twice.
func BurstDelivery(sent [][]int64, results []swload.Result) Delivery {
	burstOf := map[int64]int{}
	start := make([]int64, len(sent))
	end := make([]int64, len(sent))
	for k, ts := range sent {
		for _, t := range ts {
			burstOf[t] = k
			if start[k] == 0 || t < start[k] {
				start[k] = t
			}
		}
	}
	var d Delivery
	for _, r := range results {
		for _, s := range r.BySend {
			k, ok := burstOf[s.Sent]
			if !ok {
				continue
			}
			d.Received += s.Received
			end[k] = max(end[k], s.Last)
		}
	}
	type span struct{ from, to int64 }
	var spans []span
	var took []time.Duration
	for k := range sent {
		if start[k] > 0 && end[k] > start[k] {
			spans = append(spans, span{start[k], end[k]})
			took = append(took, time.Duration(end[k]-start[k]))
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.from, b.from) })
	var to int64
	for _, s := range spans {
		from := max(s.from, to)
		if s.to > from {
			d.Busy += time.Duration(s.to - from)
		}
		to = max(to, s.to)
	}
	d.P50, d.Max = quantile(took, 0.50), quantile(took, 1)
	return d
}

// medianConnect keeps each system's median round (by rate), in the order
// the systems first appear, with the number of rounds and the extremes.
func medianConnect(rows []PeerConnectRow) []PeerConnectRow {
	var order []string
	by := map[string][]PeerConnectRow{}
	for _, r := range rows {
		if _, ok := by[r.System]; !ok {
			order = append(order, r.System)
		}
		by[r.System] = append(by[r.System], r)
	}
	out := make([]PeerConnectRow, 0, len(order))
	for _, sys := range order {
		rs := by[sys]
		slices.SortFunc(rs, func(a, b PeerConnectRow) int { return cmp.Compare(a.PerSecond, b.PerSecond) })
		m := rs[len(rs)/2]
		m.Runs, m.Min, m.Max = len(rs), rs[0].PerSecond, rs[len(rs)-1].PerSecond
		out = append(out, m)
	}
	return out
}

func sleepUntil(ctx context.Context, t time.Time) {
	select {
	case <-time.After(time.Until(t)):
	case <-ctx.Done():
	}
}

// postConcurrency bounds the p2p posts in flight.
const postConcurrency = 32

func peerP2P(ctx context.Context, c PeersConfig, d *deployment) (PeerP2PRow, error) {
	row := PeerP2PRow{System: d.system, Posts: c.Posts}
	if len(d.nodes) < 2 {
		return row, errors.New("point-to-point needs two nodes")
	}
	group := p2pGroup
	if strings.HasPrefix(d.system, SysCentrifugo) {
		group = "p{i}" // a personal channel per client
	}
	hold := time.Duration(float64(c.Posts)/c.PostRate*float64(time.Second)) + 60*time.Second
	// The clients are on every node but the first, through which (or
	// through the router) the posts go. One process (Validate): it expects
	// every post.
	var targets []string
	for _, n := range d.nodes[1:] {
		targets = append(targets, n.ws)
	}
	ps, open, err := listenLoaders(ctx, c, d, c.P2PConns, targets, group, func(int) int { return c.Posts }, hold)
	if err != nil {
		return row, err
	}
	row.Conns = open
	ids, err := d.p2pTargets(ctx, open)
	if err != nil {
		stopAll(ps)
		return row, err
	}
	cpu0, err := cpuOf(d.procs)
	if err != nil {
		stopAll(ps)
		return row, err
	}
	echo, err := hopEchoCommand()
	if err != nil {
		stopAll(ps)
		return row, err
	}
	probe, err := startHopProbe(echo)
	if err != nil {
		stopAll(ps)
		return row, err
	}
	ticks0, err0 := readCPUTicks()
	lat, errs := postPaced(ctx, c, d, ids)
	ticks1, err1 := readCPUTicks()
	var errProbe error
	row.FloorP50, row.FloorP99, errProbe = probe.finish()
	if err := errors.Join(err0, err1, errProbe); err != nil {
		stopAll(ps)
		return row, err
	}
	row.Steal = stealShare(ticks0, ticks1)
	results, err := loadersDone(ctx, ps)
	if err != nil {
		return row, err
	}
	cpu1, err := cpuOf(d.procs)
	if err != nil {
		return row, err
	}
	row.PostErrs = errs
	row.HTTPP50, row.HTTPP99 = quantile(lat, 0.50), quantile(lat, 0.99)
	for _, r := range results {
		row.Received += r.Received
		row.RecvP50 = max(row.RecvP50, r.Latency.P50)
		row.RecvP99 = max(row.RecvP99, r.Latency.P99)
	}
	row.CPUByProc = map[string]time.Duration{}
	for i, p := range d.procs {
		per := (cpu1[i] - cpu0[i]) * 1000 / time.Duration(c.Posts)
		row.CPUByProc[p.name] = per
		row.CPUPer1000 += per
	}
	fmt.Fprintf(c.Log, "%s: %d/%d received, CPU %v per 1000 posts %v\n", d.system, row.Received, c.Posts, row.CPUPer1000, row.CPUByProc)
	return row, nil
}

// postPaced makes c.Posts posts to targets in turn at c.PostRate, at most
// postConcurrency at once, and returns each one's HTTP latency and the
// number that failed.
func postPaced(ctx context.Context, c PeersConfig, d *deployment, targets []string) ([]time.Duration, int) {
	var (
		mu   sync.Mutex
		lat  = make([]time.Duration, 0, c.Posts)
		errs atomic.Int64
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, postConcurrency)
	start := time.Now()
	every := time.Duration(float64(time.Second) / c.PostRate)
	for k := 0; k < c.Posts && ctx.Err() == nil; k++ {
		sleepUntil(ctx, start.Add(time.Duration(k)*every))
		sem <- struct{}{}
		target := targets[k%len(targets)]
		wg.Go(func() {
			defer func() { <-sem }()
			t0 := time.Now()
			err := d.post(ctx, target, PeerPayload(t0, c.Size))
			took := time.Since(t0)
			if err != nil {
				if errs.Add(1) == 1 {
					fmt.Fprintf(c.Log, "%s: post: %v\n", d.system, err)
				}
				return
			}
			mu.Lock()
			lat = append(lat, took)
			mu.Unlock()
		})
	}
	wg.Wait()
	return lat, int(errs.Load())
}

// quantile is the q-th of ds (sorted in place); 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// cpuOf reads the CPU time used so far by each of ps (running).
func cpuOf(ps []*proc) ([]time.Duration, error) {
	out := make([]time.Duration, len(ps))
	for i, p := range ps {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
		if err != nil {
			return nil, fmt.Errorf("swbench: CPU of %s: %w", p.name, err)
		}
		if out[i], err = ParseStatCPU(b); err != nil {
			return nil, fmt.Errorf("swbench: CPU of %s: %w", p.name, err)
		}
	}
	return out, nil
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// ParseStatCPU returns utime + stime from a /proc/<pid>/stat line. The
// command name (field 2) is in parentheses and may hold spaces or
// parentheses itself, so fields are counted from the last ')'.
func ParseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: malformed stat %q", ErrNotFound, stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: stat has %d fields after the name", ErrNotFound, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("swbench: stat times: %w", err)
	}
	return time.Duration(u+st) * clockTick, nil
}

// baseRow is the row that row i of a table is compared with: a
// Switchboard system's counterpart in the same mode (switchboard-redis →
// prefix+"-redis"), if the table has it; else the first row whose system
// starts with prefix; else the first row.
func baseRow(names []string, i int, prefix string) int {
	if rest, ok := strings.CutPrefix(names[i], SysSwitchboard); ok {
		if j := slices.Index(names, prefix+rest); j >= 0 {
			return j
		}
	}
	for j, n := range names {
		if strings.HasPrefix(n, prefix) {
			return j
		}
	}
	return 0
}

// ratios fills every table's ratio columns (for fan-out, against the rows
// of the same phase).
func (r *PeersReport) ratios(prefix string) {
	systems := func(n int, name func(int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = name(i)
		}
		return out
	}
	names := systems(len(r.Idle), func(i int) string { return r.Idle[i].System })
	for i := range r.Idle {
		b := r.Idle[baseRow(names, i, prefix)]
		r.Idle[i].NodeRSSRatio = ratio(r.Idle[i].NodeRSSPerConn, b.NodeRSSPerConn)
		r.Idle[i].AllRSSRatio = ratio(r.Idle[i].AllRSSPerConn, b.AllRSSPerConn)
	}
	names = systems(len(r.Connect), func(i int) string { return r.Connect[i].System })
	for i := range r.Connect {
		r.Connect[i].Ratio = ratio(r.Connect[i].PerSecond, r.Connect[baseRow(names, i, prefix)].PerSecond)
	}
	for _, phase := range uniquePhases(r.Fanout) {
		var idx []int
		for i, row := range r.Fanout {
			if row.Phase == phase {
				idx = append(idx, i)
			}
		}
		names = systems(len(idx), func(i int) string { return r.Fanout[idx[i]].System })
		for k, i := range idx {
			b := r.Fanout[idx[baseRow(names, k, prefix)]]
			r.Fanout[i].FramesPerSecRt = ratio(r.Fanout[i].FramesPerSec, b.FramesPerSec)
			r.Fanout[i].P99Ratio = ratio(float64(r.Fanout[i].P99), float64(b.P99))
			r.Fanout[i].DeliveryRt = ratio(r.Fanout[i].DeliveryRate, b.DeliveryRate)
			r.Fanout[i].CPURatio = ratio(float64(r.Fanout[i].CPUPer1000), float64(b.CPUPer1000))
		}
	}
	names = systems(len(r.P2P), func(i int) string { return r.P2P[i].System })
	for i := range r.P2P {
		b := r.P2P[baseRow(names, i, prefix)]
		r.P2P[i].CPURatio = ratio(float64(r.P2P[i].CPUPer1000), float64(b.CPUPer1000))
		r.P2P[i].HTTPP99Rt = ratio(float64(r.P2P[i].HTTPP99), float64(b.HTTPP99))
	}
}

func uniquePhases(rows []PeerFanoutRow) []string {
	var out []string
	for _, r := range rows {
		if !slices.Contains(out, r.Phase) {
			out = append(out, r.Phase)
		}
	}
	return out
}
