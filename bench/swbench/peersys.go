package swbench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/switchboardgw/switchboard/bench/connectd"
)

// The systems the peers scenario compares. Each is a set of processes on
// free loopback ports; every one of them counts in the CPU and memory
// figures.
const (
	SysBaseline          = "baseline"            // gorilla, a goroutine per connection
	SysBaselineAuth      = "baseline-auth"       // the same + connectd, asked over HTTP before each upgrade
	SysSwitchboard       = "switchboard"         // one edge, embedded NATS, in-memory registry
	SysSwitchboardRedis  = "switchboard-redis"   // 2 edges + router + redis-server + nats-server
	SysCentrifugo        = "centrifugo"          // one node, memory engine
	SysCentrifugoRedis   = "centrifugo-redis"    // 2 nodes, Redis engine
	SysSwitchboardRedis3 = "switchboard-redis-3" // 3 edges + router + redis-server + nats-server
	SysCentrifugoRedis3  = "centrifugo-redis-3"  // 3 nodes, Redis engine
	peerGroup            = "fan"                 // the fan-out group / channel
	p2pGroup             = "p2p"                 // Switchboard: the group that lists the p2p clients
	centrifugoWSPath     = "/connection/websocket"
	centrifugoConnectURL = "/centrifugo/connect" // the connect proxy's path on connectd
	baselineConnectURL   = "/baseline/connect"   // baseline-auth's connect call's path on connectd
)

// PeerSystems lists every system, in the default order.
var PeerSystems = []string{SysSwitchboard, SysSwitchboardRedis, SysCentrifugo, SysCentrifugoRedis, SysBaseline,
	SysBaselineAuth, SysSwitchboardRedis3, SysCentrifugoRedis3}

// PeerBins are the binaries the peers scenario runs.
type PeerBins struct {
	Edge, Router, Baseline, Swload, Connectd string
	Centrifugo, NATSServer, RedisServer      string
}

// peerNode is one WebSocket-serving process of a system.
type peerNode struct {
	p  *proc
	ws string // host:port of its WebSocket listener
	// admin is host:port serving /metrics and /debug/pprof.
	admin string
}

// deployment is a started system.
type deployment struct {
	system string
	// natsCommands: Switchboard's edges and router send node commands
	// through nats-server only (no -direct-listen, -direct-commands).
	natsCommands bool
	procs        []*proc // every process, in start order
	nodes        []peerNode
	// loadArgs are the swload flags for clients in group (a channel for
	// Centrifugo; "{i}" gives each connection its own).
	loadArgs func(group string) []string
	// send publishes body to every member of group; post sends body to one
	// connection (Switchboard: its ID; Centrifugo: its personal channel).
	send func(ctx context.Context, group string, body []byte) error
	post func(ctx context.Context, target string, body []byte) error
	// p2pTargets returns the targets of the n clients started with
	// loadArgs("p{i}") (Centrifugo) or loadArgs(p2pGroup) (Switchboard).
	p2pTargets func(ctx context.Context, n int) ([]string, error)
	// members counts group's members, where the system can tell (-1 if not).
	members func(ctx context.Context, group string) (int, error)
}

// stop stops every process, the last started first.
func (d *deployment) stop() error {
	var errs []error
	for i := len(d.procs) - 1; i >= 0; i-- {
		errs = append(errs, d.procs[i].stop(60*time.Second))
	}
	return errors.Join(errs...)
}

// apiClient keeps connections to the API open: the figures are the API's
// latency, not TCP set-up's.
var apiClient = &http.Client{Timeout: 30 * time.Second,
	Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}

// httpPost posts body and wants a 2xx; Centrifugo also answers errors with
// 200 and {"error":…}, so a body with "error" fails too.
func httpPost(ctx context.Context, u string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s: %s", u, resp.Status, bytes.TrimSpace(b))
	}
	if bytes.Contains(b, []byte(`"error"`)) {
		return fmt.Errorf("POST %s: %s", u, bytes.TrimSpace(b))
	}
	return nil
}

func httpGetJSON(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(b))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// startDeployment starts system with its helpers (connect authorizer,
// Redis, NATS) in dir.
func startDeployment(ctx context.Context, system string, bins PeerBins, dir string, natsCommands bool, log io.Writer) (d *deployment, err error) {
	d = &deployment{system: system, natsCommands: natsCommands}
	defer func() {
		if err != nil {
			_ = d.stop()
			d = nil
		}
	}()
	switch system {
	case SysBaseline:
		err = d.startBaseline(ctx, bins, false)
	case SysBaselineAuth:
		err = d.startBaseline(ctx, bins, true)
	case SysSwitchboard:
		err = d.startSwitchboard(ctx, bins, "", 1)
	case SysSwitchboardRedis:
		err = d.startSwitchboard(ctx, bins, dir, 2)
	case SysCentrifugo:
		err = d.startCentrifugo(ctx, bins, dir, false, 1)
	case SysCentrifugoRedis:
		err = d.startCentrifugo(ctx, bins, dir, true, 2)
	case SysSwitchboardRedis3:
		err = d.startSwitchboard(ctx, bins, dir, 3)
	case SysCentrifugoRedis3:
		err = d.startCentrifugo(ctx, bins, dir, true, 3)
	default:
		err = fmt.Errorf("%w: unknown system %q (%s)", ErrConfig, system, strings.Join(PeerSystems, ", "))
	}
	if err == nil {
		pids := make([]string, len(d.procs))
		for i, p := range d.procs {
			pids[i] = fmt.Sprintf("%s %d", p.name, p.pid())
		}
		fmt.Fprintf(log, "%s: ready (%s)\n", system, strings.Join(pids, ", "))
	}
	return d, err
}

// launch starts a process with free loopback addresses for its
// placeholders and waits for readyURL (a path on the {admin} address) to
// answer 200, or for its ready line when readyURL is empty.
func (d *deployment) launch(ctx context.Context, name string, argv []string, readyURL string) (*proc, map[string]string, error) {
	repl, err := freeAddrs(argv)
	if err != nil {
		return nil, nil, err
	}
	p, err := startReady(name, Command{Argv: argv}, repl, connectd.ReadyLine)
	if err != nil {
		return nil, nil, err
	}
	d.procs = append(d.procs, p)
	if readyURL != "" {
		return p, repl, waitReady(ctx, p, "http://"+repl["{admin}"]+readyURL, 60*time.Second)
	}
	select {
	case <-p.ready:
		return p, repl, nil
	case <-p.waited:
		return nil, nil, fmt.Errorf("swbench: %s exited before ready: %v; stderr:\n%s", name, p.err, p.tail.String())
	case <-time.After(60 * time.Second):
		return nil, nil, fmt.Errorf("swbench: %s not ready within 60s; stderr:\n%s", name, p.tail.String())
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// startBaseline starts the gorilla server; with auth, connectd first, and
// the server POSTs to it before each upgrade (-connect-url) with the
// request Centrifugo's connect proxy makes: the same backend round trip as
// the centrifugo system's, made before the 101 as Switchboard's is.
func (d *deployment) startBaseline(ctx context.Context, bins PeerBins, auth bool) error {
	argv := []string{bins.Baseline, "-listen", "{listen}", "-admin", "{admin}", "-pprof"}
	if auth {
		_, repl, err := d.launch(ctx, "connectd", []string{bins.Connectd, "-http", "{proxy}"}, "")
		if err != nil {
			return err
		}
		argv = append(argv, "-connect-url", "http://"+repl["{proxy}"]+baselineConnectURL)
	}
	p, repl, err := d.launch(ctx, "baseline", argv, "/readyz")
	if err != nil {
		return err
	}
	d.nodes = []peerNode{{p: p, ws: repl["{listen}"], admin: repl["{admin}"]}}
	d.loadArgs = func(string) []string { return nil }
	return nil
}

// startSwitchboard starts one edge with its embedded NATS and in-memory
// registry (redisDir ""), or edges edges + a router on a redis-server and
// a nats-server; then connectd answering $connect. Every edge runs with
// -connect-mode required: no connection opens without the backend's yes.
func (d *deployment) startSwitchboard(ctx context.Context, bins PeerBins, redisDir string, edges int) error {
	edgeArgs := []string{"-listen", "{listen}", "-admin-listen", "{admin}", "-api-listen", "{api}",
		"-connect-mode", "required", "-pprof", "-log-level", "warn"}
	var wire []string
	var natsURL string
	if redisDir != "" {
		rp, raddr, err := startRedisProc(ctx, bins.RedisServer, redisDir)
		if err != nil {
			return err
		}
		d.procs = append(d.procs, rp)
		naddr, err := freeAddr()
		if err != nil {
			return err
		}
		np, err := startNATSProc(ctx, bins.NATSServer, naddr)
		if err != nil {
			return err
		}
		np.anyExit = true
		d.procs = append(d.procs, np)
		natsURL = "nats://" + naddr
		wire = []string{"-nats-url", natsURL, "-redis-url", "redis://" + raddr + "/0"}
		if !d.natsCommands {
			edgeArgs = append(edgeArgs, "-direct-listen", "{direct}")
		}
	} else {
		edgeArgs = append(edgeArgs, "-nats-embedded-listen", "{nats}")
	}
	api := ""
	for i := range edges {
		argv := append(append([]string{bins.Edge}, edgeArgs...), wire...)
		p, repl, err := d.launch(ctx, "edge"+strconv.Itoa(i+1), argv, "/readyz")
		if err != nil {
			return err
		}
		d.nodes = append(d.nodes, peerNode{p: p, ws: repl["{listen}"], admin: repl["{admin}"]})
		if natsURL == "" {
			natsURL = "nats://" + repl["{nats}"]
		}
		api = "http://" + repl["{api}"]
	}
	if redisDir != "" {
		argv := append([]string{bins.Router, "-api-listen", "{api}", "-admin-listen", "{admin}", "-pprof", "-log-level", "warn"}, wire...)
		if !d.natsCommands {
			argv = append(argv, "-direct-commands")
		}
		_, repl, err := d.launch(ctx, "router", argv, "/readyz")
		if err != nil {
			return err
		}
		api = "http://" + repl["{api}"] // every API call goes through the router
	}
	if _, _, err := d.launch(ctx, "connectd", []string{bins.Connectd, "-nats", natsURL}, ""); err != nil {
		return err
	}
	d.loadArgs = func(group string) []string {
		if group == "" {
			return nil
		}
		return []string{"-path", "/?group=" + url.QueryEscape(group)}
	}
	d.send = func(ctx context.Context, group string, body []byte) error {
		return httpPost(ctx, api+"/@groups/"+url.PathEscape(group), body)
	}
	d.post = func(ctx context.Context, id string, body []byte) error {
		return httpPost(ctx, api+"/@connections/"+url.PathEscape(id), body)
	}
	d.members = func(ctx context.Context, group string) (int, error) {
		var r struct {
			Connections int `json:"connections"`
		}
		err := httpGetJSON(ctx, api+"/@groups/"+url.PathEscape(group), &r)
		return r.Connections, err
	}
	d.p2pTargets = func(ctx context.Context, n int) ([]string, error) {
		return listGroup(ctx, api, p2pGroup, n)
	}
	return nil
}

// listGroup pages through a group's connection IDs until it has want.
func listGroup(ctx context.Context, api, group string, want int) ([]string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		seen := map[string]bool{}
		cursor := ""
		for {
			u := api + "/@groups/" + url.PathEscape(group) + "/connections?limit=1000"
			if cursor != "" {
				u += "&cursor=" + url.QueryEscape(cursor)
			}
			var page struct {
				Connections []string `json:"connections"`
				Cursor      string   `json:"cursor"`
			}
			if err := httpGetJSON(ctx, u, &page); err != nil {
				return nil, fmt.Errorf("swbench: list group %s: %w", group, err)
			}
			for _, id := range page.Connections {
				seen[id] = true
			}
			if cursor = page.Cursor; cursor == "" {
				break
			}
		}
		if len(seen) >= want || time.Now().After(deadline) {
			ids := make([]string, 0, len(seen))
			for id := range seen {
				ids = append(ids, id)
			}
			if len(ids) < want {
				return ids, fmt.Errorf("swbench: group %s lists %d connections, want %d", group, len(ids), want)
			}
			return ids, nil
		}
		time.Sleep(100 * time.Millisecond) // listings may lag by one Redis write
	}
}

// CentrifugoConfig is the configuration file the peers scenario gives
// Centrifugo v6: the WebSocket, HTTP API, /metrics, /health and pprof on
// one loopback port; connections authorised by the connect proxy at
// proxyURL (anonymous users), which may subscribe to any channel without a
// namespace; the HTTP API without a key; the memory engine, or the Redis
// engine at redisAddr.
func CentrifugoConfig(port int, proxyURL, redisAddr string) ([]byte, error) {
	engine := map[string]any{"type": "memory"}
	if redisAddr != "" {
		engine = map[string]any{"type": "redis", "redis": map[string]any{"address": "redis://" + redisAddr}}
	}
	cfg := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"log":         map[string]any{"level": "error"},
		"engine":      engine,
		"client": map[string]any{
			"proxy": map[string]any{"connect": map[string]any{"enabled": true, "endpoint": proxyURL, "timeout": "5s"}},
		},
		"channel": map[string]any{"without_namespace": map[string]any{
			"allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true,
		}},
		"http_api":   map[string]any{"insecure": true},
		"prometheus": map[string]any{"enabled": true},
		"health":     map[string]any{"enabled": true},
		"debug":      map[string]any{"enabled": true},
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// startCentrifugo starts connectd as the connect proxy, a redis-server
// when redis is set, and nodes Centrifugo nodes.
func (d *deployment) startCentrifugo(ctx context.Context, bins PeerBins, dir string, redis bool, nodes int) error {
	_, repl, err := d.launch(ctx, "connectd", []string{bins.Connectd, "-http", "{proxy}"}, "")
	if err != nil {
		return err
	}
	proxyURL := "http://" + repl["{proxy}"] + centrifugoConnectURL
	redisAddr := ""
	if redis {
		rp, addr, err := startRedisProc(ctx, bins.RedisServer, dir)
		if err != nil {
			return err
		}
		d.procs = append(d.procs, rp)
		redisAddr = addr
	}
	for i := range nodes {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		_, portStr, _ := strings.Cut(addr, ":")
		port, _ := strconv.Atoi(portStr)
		cfg, err := CentrifugoConfig(port, proxyURL, redisAddr)
		if err != nil {
			return err
		}
		file := filepath.Join(dir, fmt.Sprintf("centrifugo%d.json", i+1))
		if err := os.WriteFile(file, cfg, 0o600); err != nil {
			return fmt.Errorf("swbench: %w", err)
		}
		name := "centrifugo" + strconv.Itoa(i+1)
		p, err := startReady(name, Command{Argv: []string{bins.Centrifugo, "--config", file}}, nil, connectd.ReadyLine)
		if err != nil {
			return err
		}
		d.procs = append(d.procs, p)
		if err := waitReady(ctx, p, "http://"+addr+"/health", 60*time.Second); err != nil {
			return err
		}
		d.nodes = append(d.nodes, peerNode{p: p, ws: addr, admin: addr})
	}
	api := "http://" + d.nodes[0].ws + "/api/publish" // node A: a publish crosses to B through Redis
	d.loadArgs = func(channel string) []string {
		args := []string{"-protocol", "centrifugo", "-path", centrifugoWSPath}
		if channel != "" {
			args = append(args, "-channel", channel)
		}
		return args
	}
	publish := func(ctx context.Context, channel string, body []byte) error {
		return httpPost(ctx, api, CentrifugoPublish(channel, body))
	}
	d.send, d.post = publish, publish
	d.members = func(context.Context, string) (int, error) { return -1, nil }
	d.p2pTargets = func(_ context.Context, n int) ([]string, error) {
		out := make([]string, n)
		for i := range out {
			out[i] = p2pChannel(i)
		}
		return out, nil
	}
	return nil
}

// p2pChannel is the personal channel of p2p client i (swload's "p{i}").
func p2pChannel(i int) string { return "p" + strconv.Itoa(i) }

// CentrifugoPublish is the HTTP API's publish request: data is the JSON
// body the clients receive as the publication's data.
func CentrifugoPublish(channel string, data []byte) []byte {
	b, _ := json.Marshal(struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}{channel, data})
	return b
}
