package swbench

import (
	"github.com/switchboardgw/switchboard/internal/testenv"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/switchboardgw/switchboard/bench/swload"
)

func TestStatCPUIsUserPlusSystemTicksCountedFromTheLastParenthesis(t *testing.T) {
	// A command name with a space and a ')' of its own; utime 250, stime 50.
	stat := []byte("4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 12 0 100 123456789 2000 18446744073709551615\n")
	got, err := ParseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Errorf("CPU = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "4242 no parens", "4242 (x) S 1 2", "4242 (x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 u s 0"} {
		if _, err := ParseStatCPU([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestOwnStatParses(t *testing.T) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseStatCPU(b); err != nil {
		t.Fatal(err)
	}
}

func TestPeerRatiosCompareEachSwitchboardModeWithCentrifugosSameMode(t *testing.T) {
	rep := PeersReport{
		Idle: []PeerIdleRow{
			{System: SysSwitchboard, NodeRSSPerConn: 3000, AllRSSPerConn: 4000},
			{System: SysSwitchboardRedis, NodeRSSPerConn: 6000, AllRSSPerConn: 8000},
			{System: SysCentrifugo, NodeRSSPerConn: 30000, AllRSSPerConn: 32000},
			{System: SysCentrifugoRedis, NodeRSSPerConn: 60000, AllRSSPerConn: 64000},
			{System: SysBaseline, NodeRSSPerConn: 15000, AllRSSPerConn: 16000},
			{System: SysBaselineAuth, NodeRSSPerConn: 15000, AllRSSPerConn: 19200},
		},
		Connect: []PeerConnectRow{{System: SysSwitchboardRedis, PerSecond: 100}, {System: SysCentrifugo, PerSecond: 50}},
		Fanout: []PeerFanoutRow{
			{System: SysSwitchboard, Phase: "one", FramesPerSec: 300, P99: 2 * time.Millisecond},
			{System: SysSwitchboard, Phase: "burst", FramesPerSec: 900, P99: 9 * time.Millisecond, DeliveryRate: 2000, CPUPer1000: time.Millisecond},
			{System: SysCentrifugo, Phase: "one", FramesPerSec: 100, P99: 4 * time.Millisecond},
			{System: SysCentrifugo, Phase: "burst", FramesPerSec: 300, P99: 3 * time.Millisecond, DeliveryRate: 100, CPUPer1000: 20 * time.Millisecond},
		},
		P2P: []PeerP2PRow{
			{System: SysSwitchboardRedis, CPUPer1000: time.Second}, {System: SysCentrifugoRedis, CPUPer1000: 4 * time.Second},
			{System: SysSwitchboardRedis3, CPUPer1000: 3 * time.Second}, {System: SysCentrifugoRedis3, CPUPer1000: 6 * time.Second},
		},
	}
	rep.ratios(SysCentrifugo)
	for i, want := range [][2]float64{{0.1, 0.125}, {0.1, 0.125}, {1, 1}, {2, 2}, {0.5, 0.5}, {0.5, 0.6}} {
		if r := rep.Idle[i]; r.NodeRSSRatio != want[0] || r.AllRSSRatio != want[1] {
			t.Errorf("%s idle ratios %v, %v; want %v", r.System, r.NodeRSSRatio, r.AllRSSRatio, want)
		}
	}
	// No centrifugo-redis row: the first centrifugo row is the base.
	if r := rep.Connect[0]; r.Ratio != 2 {
		t.Errorf("switchboard-redis connect ratio %v, want 2", r.Ratio)
	}
	if a, b := rep.Fanout[0], rep.Fanout[1]; a.FramesPerSecRt != 3 || a.P99Ratio != 0.5 || b.FramesPerSecRt != 3 || b.P99Ratio != 3 {
		t.Errorf("fan-out ratios %+v / %+v: want each phase against its own centrifugo row", a, b)
	}
	if b := rep.Fanout[1]; b.DeliveryRt != 20 || b.CPURatio != 0.05 {
		t.Errorf("burst delivery ratio %v, CPU ratio %v; want 20 and 0.05", b.DeliveryRt, b.CPURatio)
	}
	if a, b := rep.P2P[0], rep.P2P[2]; a.CPURatio != 0.25 || b.CPURatio != 0.5 {
		t.Errorf("p2p CPU ratios %v, %v; want 0.25 (vs centrifugo-redis), 0.5 (vs centrifugo-redis-3)", a.CPURatio, b.CPURatio)
	}
	// No row of the base system: the first row is the base.
	only := PeersReport{Connect: []PeerConnectRow{{System: SysSwitchboard, PerSecond: 10}, {System: SysBaseline, PerSecond: 20}}}
	only.ratios(SysCentrifugo)
	if only.Connect[1].Ratio != 2 {
		t.Errorf("ratio %v against the first row, want 2", only.Connect[1].Ratio)
	}
	// -ratio-base baseline: baseline-auth and switchboard against baseline.
	bases := PeersReport{Connect: []PeerConnectRow{{System: SysBaseline, PerSecond: 100},
		{System: SysBaselineAuth, PerSecond: 50}, {System: SysSwitchboard, PerSecond: 40}}}
	bases.ratios(SysBaseline)
	if a, s := bases.Connect[1].Ratio, bases.Connect[2].Ratio; a != 0.5 || s != 0.4 {
		t.Errorf("against baseline: baseline-auth %v, switchboard %v; want 0.5 and 0.4", a, s)
	}
}

func TestPeersReportPrintsEveryTable(t *testing.T) {
	rep := PeersReport{
		Idle:    []PeerIdleRow{{System: SysCentrifugo, Conns: 15000, NodeRSSPerConn: 40 << 10, GoKnown: true, HeapPerConn: 16 << 10, GoroutinesPerConn: 2}, {System: SysBaseline, Conns: 15000}},
		Connect: []PeerConnectRow{{System: SysCentrifugo, Conns: 15000, PerSecond: 2500, P99: 3 * time.Millisecond}},
		Fanout: []PeerFanoutRow{{System: SysSwitchboard, Phase: "one at a time", Members: 10000, Expected: 200000, Received: 200000,
			DeliveryRate: 123456, CPUPer1000: 7 * time.Millisecond, CPUByProc: map[string]time.Duration{"edge1": 6 * time.Millisecond, "connectd": time.Millisecond}}},
		P2P: []PeerP2PRow{{System: SysCentrifugoRedis, Posts: 5000, CPUPer1000: 420 * time.Millisecond, CPUByProc: map[string]time.Duration{"centrifugo1": 300 * time.Millisecond, "redis-server": 120 * time.Millisecond}}},
	}
	var b bytes.Buffer
	WritePeersReport(&b, rep, PeersConfig{}.withDefaults())
	out := b.String()
	for _, want := range []string{
		"Idle connections (15000 per system", "node RSS/conn KiB", "40.00", "16.00", "2.000", "n/a",
		"Connect rate (15000 connections", "baseline-auth over HTTP as Centrifugo's proxy does", "2500", "3ms",
		"Fan-out to one group / channel (10000 members", "200000/200000", "123456", "7.0",
		"switchboard, one at a time: system CPU ms/1000 publications by process: connectd 1.0, edge1 6.0",
		"Cross-node point to point", "420.0", "centrifugo-redis CPU ms/1000 posts by process: centrifugo1 300.0, redis-server 120.0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestCentrifugoConfigUsesV6Keys(t *testing.T) {
	b, err := CentrifugoConfig(18000, "http://127.0.0.1:18001/centrifugo/connect", "127.0.0.1:16379")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		HTTPServer struct {
			Address string `json:"address"`
			Port    int    `json:"port"`
		} `json:"http_server"`
		Engine struct {
			Type  string `json:"type"`
			Redis struct {
				Address string `json:"address"`
			} `json:"redis"`
		} `json:"engine"`
		Client struct {
			Proxy struct {
				Connect struct {
					Enabled  bool   `json:"enabled"`
					Endpoint string `json:"endpoint"`
				} `json:"connect"`
			} `json:"proxy"`
		} `json:"client"`
		Channel struct {
			WithoutNamespace map[string]bool `json:"without_namespace"`
		} `json:"channel"`
		HTTPAPI struct {
			Insecure bool `json:"insecure"`
		} `json:"http_api"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPServer.Address != "127.0.0.1" || cfg.HTTPServer.Port != 18000 {
		t.Errorf("http_server %+v: want loopback port 18000", cfg.HTTPServer)
	}
	if cfg.Engine.Type != "redis" || cfg.Engine.Redis.Address != "redis://127.0.0.1:16379" {
		t.Errorf("engine %+v", cfg.Engine)
	}
	if !cfg.Client.Proxy.Connect.Enabled || cfg.Client.Proxy.Connect.Endpoint != "http://127.0.0.1:18001/centrifugo/connect" {
		t.Errorf("connect proxy %+v", cfg.Client.Proxy.Connect)
	}
	if !cfg.Channel.WithoutNamespace["allow_subscribe_for_client"] || !cfg.Channel.WithoutNamespace["allow_subscribe_for_anonymous"] || !cfg.HTTPAPI.Insecure {
		t.Errorf("channel %+v, http_api %+v", cfg.Channel, cfg.HTTPAPI)
	}
	mem, _ := CentrifugoConfig(18000, "http://x", "")
	if !bytes.Contains(mem, []byte(`"type": "memory"`)) {
		t.Errorf("no Redis: want the memory engine:\n%s", mem)
	}
}

func TestCentrifugoPublishCarriesTheBodyAsData(t *testing.T) {
	body := PeerPayload(time.Unix(0, 1733150000123456789), 64)
	var req struct {
		Channel string `json:"channel"`
		Data    struct {
			T int64  `json:"t"`
			P string `json:"p"`
		} `json:"data"`
	}
	if err := json.Unmarshal(CentrifugoPublish("p7", body), &req); err != nil {
		t.Fatal(err)
	}
	if req.Channel != "p7" || req.Data.T != 1733150000123456789 {
		t.Errorf("publish %+v", req)
	}
	if len(body) != 64 {
		t.Errorf("payload is %d bytes, want 64: %s", len(body), body)
	}
}

func TestToolsAreCachedPerVersion(t *testing.T) {
	if got := toolPath("/c", CentrifugoModule, "v6.9.1"); got != "/c/centrifugo-v6.9.1/centrifugo" {
		t.Errorf("centrifugo at %s", got)
	}
	if got := toolPath("/c", NATSServerModule, "v2.15.2"); got != "/c/nats-server-v2.15.2/nats-server" {
		t.Errorf("nats-server at %s", got)
	}
	cache := t.TempDir()
	path := toolPath(cache, CentrifugoModule, CentrifugoVersion)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", "") // a build would need go: the cached binary must do
	got, err := installTool(context.Background(), cache, CentrifugoModule, CentrifugoVersion, &bytes.Buffer{})
	if err != nil || got != path {
		t.Errorf("installTool = %q, %v; want the cached %s", got, err, path)
	}
}

func TestPeersConfigRefusesWhatCannotRun(t *testing.T) {
	for _, c := range []PeersConfig{
		{Systems: []string{"nginx"}},
		{Scenarios: []string{"echo"}},
		{P2PConns: 9000, PerProcess: 8000},
		{Posts: -1},
		{Size: 10},
	} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", c, err)
		}
	}
	if err := (PeersConfig{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestPointToPointIsAcrossNodesAndFanoutNeedsGroups(t *testing.T) {
	for _, c := range []struct {
		scenario, system string
		want             bool
	}{
		{PeerIdle, SysBaseline, true},
		{PeerConnect, SysBaseline, true},
		{PeerFanout, SysBaseline, false},
		{PeerP2P, SysBaseline, false},
		{PeerIdle, SysBaselineAuth, true},
		{PeerConnect, SysBaselineAuth, true},
		{PeerFanout, SysBaselineAuth, false},
		{PeerP2P, SysBaselineAuth, false},
		{PeerFanout, SysCentrifugo, true},
		{PeerP2P, SysSwitchboard, false},
		{PeerP2P, SysSwitchboardRedis, true},
		{PeerP2P, SysCentrifugoRedis, true},
		{PeerP2P, SysSwitchboardRedis3, true},
		{PeerFanout, SysCentrifugoRedis3, true},
		{PeerIdle, SysSwitchboardRedis3, false},
		{PeerConnect, SysCentrifugoRedis3, false},
	} {
		if got := peerRuns(c.scenario, c.system); got != c.want {
			t.Errorf("%s on %s: %v, want %v", c.scenario, c.system, got, c.want)
		}
	}
}

func TestConnectRoundsKeepEachSystemsMedian(t *testing.T) {
	got := medianConnect([]PeerConnectRow{
		{System: SysSwitchboard, PerSecond: 300, P99: 3}, {System: SysCentrifugo, PerSecond: 50},
		{System: SysSwitchboard, PerSecond: 100, P99: 1}, {System: SysCentrifugo, PerSecond: 70},
		{System: SysSwitchboard, PerSecond: 200, P99: 2}, {System: SysCentrifugo, PerSecond: 60},
	})
	want := []PeerConnectRow{
		{System: SysSwitchboard, PerSecond: 200, P99: 2, Runs: 3, Min: 100, Max: 300},
		{System: SysCentrifugo, PerSecond: 60, Runs: 3, Min: 50, Max: 70},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestBurstDeliveryIsTheUnionOfEachBurstsFirstSendToItsLastReceipt(t *testing.T) {
	// Burst 0 sent at 100 and 110, burst 1 at 1000; burst 2 at 1050 overlaps
	// burst 1's delivery, so busy time is 100→400 plus 1000→1600.
	sent := [][]int64{{110, 100}, {1000}, {1050}}
	results := []swload.Result{
		{BySend: []swload.SendReceipt{{Sent: 100, Received: 5, Last: 300}, {Sent: 110, Received: 5, Last: 250}, {Sent: 1000, Received: 5, Last: 1500}}},
		{BySend: []swload.SendReceipt{{Sent: 100, Received: 5, Last: 400}, {Sent: 1050, Received: 10, Last: 1600}, {Sent: 7, Received: 99, Last: 9000}}},
	}
	d := BurstDelivery(sent, results)
	if d.Received != 30 {
		t.Errorf("received %d, want 30 (a send time of no burst is not counted)", d.Received)
	}
	if d.Busy != 900 {
		t.Errorf("busy %v, want 900ns: overlapping bursts counted once", d.Busy)
	}
	if d.P50 != 500 || d.Max != 550 {
		t.Errorf("burst delivery p50 %v, max %v; want 500ns and 550ns (bursts took 300, 500, 550)", d.P50, d.Max)
	}
	if d := BurstDelivery(sent, nil); d.Received != 0 || d.Busy != 0 || d.Max != 0 {
		t.Errorf("nothing received: %+v", d)
	}
}

func TestCPUProfileIsSavedFromTheNodesPprof(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/pprof/profile" || r.URL.Query().Get("seconds") != "3" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("profile"))
	}))
	defer srv.Close()
	admin := strings.TrimPrefix(srv.URL, "http://")
	path := filepath.Join(t.TempDir(), "edge1.pprof")
	if err := cpuProfile(context.Background(), admin, 3, path); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "profile" {
		t.Errorf("saved %q, %v; want the profile", b, err)
	}
	if err := cpuProfile(context.Background(), admin, 4, path+".x"); err == nil {
		t.Error("a 404 is no profile")
	}
}

func TestBaselineAuthIsADefaultSystemRightAfterBaseline(t *testing.T) {
	i := slices.Index(PeerSystems, SysBaseline)
	if i < 0 || i+1 >= len(PeerSystems) || PeerSystems[i+1] != SysBaselineAuth {
		t.Errorf("default systems %v: want %s right after %s", PeerSystems, SysBaselineAuth, SysBaseline)
	}
	if err := (PeersConfig{Systems: []string{SysBaselineAuth}}).Validate(); err != nil {
		t.Errorf("baseline-auth alone: %v", err)
	}
}

// roleScript is an executable that runs the test binary in role, for the
// deployments, which start their binaries without an environment of their
// own.
func roleScript(t *testing.T, role string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), role)
	script := fmt.Sprintf("#!/bin/sh\nexec env %s=%s '%s' \"$@\"\n", roleEnv, role, os.Args[0])
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBaselineAuthAsksConnectdBeforeEachUpgrade(t *testing.T) {
	bins := PeerBins{Baseline: roleScript(t, "baseline"), Connectd: roleScript(t, "connectd")}
	ctx := context.Background()
	d, err := startDeployment(ctx, SysBaselineAuth, bins, t.TempDir(), false, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	}()
	if len(d.procs) != 2 || d.procs[0].name != "connectd" || d.procs[1].name != "baseline" ||
		len(d.nodes) != 1 || d.nodes[0].p != d.procs[1] {
		t.Fatalf("processes %v, nodes %v: want connectd, then the baseline as the node", d.procs, d.nodes)
	}
	url := "ws://" + d.nodes[0].ws + "/"
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial through connectd's allow: %v", err)
	}
	c.Close()
	// Without connectd no connection opens: the baseline did ask it.
	if err := d.procs[0].stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if c, resp, err := websocket.DefaultDialer.Dial(url, nil); err == nil {
		c.Close()
		t.Error("connected with connectd stopped")
	} else if resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Errorf("connectd stopped: %v, response %v; want 502", err, resp)
	}
}

// The floor probe reads /proc/stat's aggregate line, steal its eighth
// field, and refuses anything else.
func TestParseCPUTicks(t *testing.T) {
	a, err := parseCPUTicks([]byte("cpu  100 5 50 800 10 0 5 30 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.total != 1000 || a.steal != 30 {
		t.Fatalf("total %d steal %d, want 1000 and 30 (guest time is already in user)", a.total, a.steal)
	}
	b := cpuTicks{total: 1200, steal: 40}
	if got := stealShare(a, b); got != 0.05 {
		t.Fatalf("steal share %v, want 0.05", got)
	}
	if got := stealShare(b, a); got != 0 {
		t.Fatalf("steal share backwards %v, want 0", got)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 3", "cpu 1 2 3 4 5 6 7 x"} {
		if _, err := parseCPUTicks([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// The floor probe's round trips go to its own child process and back; the
// child ends with the probe, and a child that dies is an error, not a
// figure.
func TestHopProbeMeasuresRoundTrips(t *testing.T) {
	p, err := startHopProbe(self("hop-echo"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "ten round trips", func() bool { return p.trips.Load() >= 10 })
	p50, p99, err := p.finish()
	if err != nil || p50 <= 0 || p99 < p50 {
		t.Fatalf("p50 %v p99 %v err %v", p50, p99, err)
	}
	if !p.echo.exited() {
		t.Fatal("the echo child is still running")
	}

	p, err = startHopProbe(self("hop-echo"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "a round trip", func() bool { return p.trips.Load() >= 1 })
	_ = p.echo.cmd.Process.Kill()
	testenv.Eventually(t, "the probe to notice", func() bool {
		select {
		case <-p.done:
			return true
		default:
			return false
		}
	})
	if _, _, err := p.finish(); err == nil {
		t.Fatal("no error after the echo child died")
	}
}
