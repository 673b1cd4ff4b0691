package swbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchboardgw/switchboard/bench/baseline"
	"github.com/switchboardgw/switchboard/bench/connectd"
	"github.com/switchboardgw/switchboard/bench/swload"
)

// The test binary doubles as the baseline server, connectd and swload when
// started by the driver with roleEnv set, so the driver is tested with real
// processes and no extra build.
const roleEnv = "SWBENCH_TEST_ROLE"

func TestMain(m *testing.M) {
	role := os.Getenv(roleEnv)
	if role == "" {
		os.Exit(m.Run())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch role {
	case "baseline":
		err = baseline.CLI(ctx, os.Args[1:], os.Stderr)
	case "swload":
		err = swload.CLI(ctx, os.Args[1:], os.Stdout, os.Stderr)
	case "connectd":
		err = connectd.CLI(ctx, os.Args[1:], os.Stderr)
	case "hop-echo":
		err = HopEchoCLI(ctx, os.Stderr)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func self(role string, args ...string) Command {
	return Command{Argv: append([]string{os.Args[0]}, args...), Env: []string{roleEnv + "=" + role}}
}

func TestVmRSSIsReadInBytes(t *testing.T) {
	status := "Name:\tedge\nVmPeak:\t  999 kB\nVmRSS:\t   16776 kB\nThreads:\t9\n"
	got, err := parseVmRSS(strings.NewReader(status))
	if err != nil || got != 16776*1024 {
		t.Fatalf("parseVmRSS = %d, %v; want %d", got, err, 16776*1024)
	}
	if _, err := parseVmRSS(strings.NewReader("Name:\tx\n")); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing VmRSS: err = %v, want ErrNotFound", err)
	}
	if _, err := parseVmRSS(strings.NewReader("VmRSS:\t12 MB\n")); err == nil {
		t.Error("a VmRSS in an unknown unit was accepted")
	}
	rss, err := ReadRSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Errorf("ReadRSS(self) = %d, %v; want at least 1 MiB", rss, err)
	}
}

func TestMetricsAreParsedFromARealRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	labelled := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"reason"})
	labelled.WithLabelValues("a").Add(3)
	reg.MustRegister(labelled)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	s, err := Measure(context.Background(), os.Getpid(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if s.Goroutines < 1 || s.HeapInuse <= 0 || s.RSS <= 0 {
		t.Errorf("sample %+v: every figure should be positive", s)
	}
	m, err := Scrape(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m["process_resident_memory_bytes"]; !ok {
		t.Error("process_resident_memory_bytes missing")
	}
	if _, ok := m["x_total"]; ok {
		t.Error("a labelled sample was returned as unlabelled")
	}
	if _, err := ParseMetrics(strings.NewReader("go_goroutines twelve\n")); err == nil {
		t.Error("a non-numeric value was accepted")
	}
	bad := httptest.NewServer(http.NotFoundHandler())
	defer bad.Close()
	if _, err := Measure(context.Background(), os.Getpid(), bad.URL); err == nil {
		t.Error("a 404 /metrics was accepted")
	}
}

// The idle scenario end to end, with real processes: two servers (both the
// baseline here), each loaded by two swload processes from two source
// addresses. Gorilla's server costs one goroutine per connection, so the
// driver must find one.
func TestIdleScenarioMeasuresEachServerSideBySide(t *testing.T) {
	base := self("baseline", "-listen", "{listen}", "-admin", "{admin}", "-pprof")
	rows, err := RunIdle(context.Background(), Config{
		Servers:    []ServerSpec{{Name: "baseline", Cmd: base}, {Name: "again", Cmd: base}},
		Swload:     self("swload"),
		Conns:      300,
		PerProcess: 200,
		Rate:       5000,
		GC:         true,
		Settle:     1, // a nanosecond: the figures checked here do not need settling
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	for _, r := range rows {
		if r.Conns != 300 || r.Failed != 0 || r.ClosedByServer != 0 {
			t.Errorf("%s: %d open, %d failed, %d closed by server; want 300 0 0", r.Server, r.Conns, r.Failed, r.ClosedByServer)
		}
		// ±5%: a few goroutines of the server's own (an admin request's,
		// start-up's) may come and go between the two samples.
		if r.GoroutinesPer < 0.95 || r.GoroutinesPer > 1.05 {
			t.Errorf("%s: %.3f goroutines per connection, want 1", r.Server, r.GoroutinesPer)
		}
		if r.RSSPerConn <= 0 || r.HeapPerConn <= 0 {
			t.Errorf("%s: RSS/conn %.0f heap/conn %.0f, want positive", r.Server, r.RSSPerConn, r.HeapPerConn)
		}
	}
	if rows[0].RSSVsBaseline != 1 || rows[1].RSSVsBaseline <= 0 {
		t.Errorf("ratios vs baseline: %v and %v", rows[0].RSSVsBaseline, rows[1].RSSVsBaseline)
	}
	var sb strings.Builder
	WriteIdleTable(&sb, rows)
	if !strings.Contains(sb.String(), "goroutines/conn") || !strings.Contains(sb.String(), "again") {
		t.Errorf("table:\n%s", sb.String())
	}
}

func TestConnectRateScenarioCountsEveryConnect(t *testing.T) {
	rows, err := RunConnectRate(context.Background(), Config{
		Servers: []ServerSpec{{Name: "baseline", Cmd: self("baseline", "-listen", "{listen}", "-admin", "{admin}")}},
		Swload:  self("swload"),
		Conns:   200,
		Repeat:  2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
	r := rows[0]
	if r.Conns != 200 || r.Failed != 0 || r.Runs != 2 || r.RateVsBaseline != 1 {
		t.Fatalf("row %+v: want 200 connections, none failed, 2 runs", r)
	}
	if r.Min <= 0 || r.Min > r.PerSecond || r.PerSecond > r.Max {
		t.Errorf("median %.0f outside min %.0f – max %.0f", r.PerSecond, r.Min, r.Max)
	}
}

func TestEchoScenarioMeasuresRoundTrips(t *testing.T) {
	rows, err := RunEcho(context.Background(), Config{
		Servers: []ServerSpec{{Name: "baseline", Cmd: self("baseline", "-listen", "{listen}", "-admin", "{admin}")}},
		Swload:  self("swload"),
	}, EchoConfig{Conns: 50, Messages: 500, MsgRate: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
	r := rows[0]
	if r.Conns != 50 || r.Sent != 500 || r.Received != 500 || r.P50 <= 0 || r.P50 > r.P99 || r.P99VsBaseline != 1 {
		t.Errorf("row %+v: want 50 connections, 500 messages sent and echoed, ordered quantiles", r)
	}
	var sb strings.Builder
	WriteEchoTable(&sb, rows)
	if !strings.Contains(sb.String(), "p999") {
		t.Errorf("table:\n%s", sb.String())
	}
}

func TestServerThatNeverGetsReadyIsReported(t *testing.T) {
	_, err := RunIdle(context.Background(), Config{
		Servers: []ServerSpec{{Name: "broken", Cmd: self("baseline", "-listen", "not-an-address")}},
		Swload:  self("swload"),
		Conns:   10,
	})
	if err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("err = %v, want a start-up failure naming the server", err)
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{Servers: []ServerSpec{{Name: "b", Cmd: self("baseline")}}, Swload: self("swload")}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]Config{
		"no servers": {Swload: ok.Swload},
		"no swload":  {Servers: ok.Servers},
		"too many":   {Servers: ok.Servers, Swload: ok.Swload, Conns: 1000, PerProcess: 1},
	} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

// The echo backend answers a two-way route request with the MESSAGE
// event's body, as a backend of the edge would.
func TestEchoBackendRepliesWithTheEventBody(t *testing.T) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats server not ready")
	}
	addr := ns.Addr().String()
	stop, err := echoBackend(addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	nc, err := nats.Connect("nats://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	body := `{"action":"echo","t":42,"p":"x"}`
	event, _ := json.Marshal(map[string]any{"requestContext": map[string]any{"routeKey": "echo"}, "body": body})
	reply, err := nc.Request("switchboard.route.echo", event, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(reply.Data) != body {
		t.Errorf("reply %q, want the body %q", reply.Data, body)
	}
}

// The drain scenario SIGTERMs a server holding idle connections and times
// its exit; every client sees its connection ended by the server.
func TestDrainScenarioTimesTheShutdown(t *testing.T) {
	rows, err := RunDrain(context.Background(), Config{
		Servers: []ServerSpec{{Name: "baseline", Cmd: self("baseline", "-listen", "{listen}", "-admin", "{admin}")}},
		Swload:  self("swload"),
		Conns:   100,
		Rate:    5000,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Conns != 100 || rows[0].ClosedByServer != 100 || rows[0].Seconds <= 0 {
		t.Fatalf("rows %+v, want 100 connections, all closed by the server, a positive time", rows)
	}
	var sb strings.Builder
	WriteDrainTable(&sb, rows)
	if !strings.Contains(sb.String(), "SIGTERM → exit") {
		t.Errorf("table:\n%s", sb.String())
	}
}
