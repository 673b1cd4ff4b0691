package swbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/switchboardgw/switchboard/bench/internal/defaults"
)

// EchoConfig is the echo scenario's load. The zero value of every field
// means its default.
type EchoConfig struct {
	// Conns is how many connections carry the messages. Default 1000.
	Conns int
	// Messages is how many messages are sent in all. Default 50000.
	Messages int
	// MsgRate is messages per second, all connections together. Default 10000.
	MsgRate float64
	// MsgSize is each message's size in bytes. Default 64.
	MsgSize int
}

func (e EchoConfig) withDefaults() EchoConfig {
	defaults.Set(&e.Conns, 1000)
	defaults.Set(&e.Messages, 50000)
	defaults.Set(&e.MsgRate, 10000)
	defaults.Set(&e.MsgSize, 64)
	return e
}

// EchoRow is one server's round-trip figures.
type EchoRow struct {
	Server        string        `json:"server"`
	Conns         int           `json:"connections"`
	Sent          int64         `json:"sent"`
	Received      int64         `json:"received"`
	PerSecond     float64       `json:"msgsPerSec"`
	P50           time.Duration `json:"p50Ns"`
	P99           time.Duration `json:"p99Ns"`
	P999          time.Duration `json:"p999Ns"`
	P99VsBaseline float64       `json:"p99VsBaseline"`
}

// RunEcho measures message round trips through each server: the baseline
// echoes them itself; a server whose spec has NATS set routes them (route
// key "echo", which must be a two-way route) to a backend that this driver
// runs on that NATS server and that replies with the message's body.
func RunEcho(ctx context.Context, c Config, e EchoConfig) ([]EchoRow, error) {
	e = e.withDefaults()
	return runEach(c, "echo", func(c Config, spec ServerSpec) (EchoRow, error) { return echoOne(ctx, c, e, spec) },
		func(row *EchoRow, base EchoRow) { row.P99VsBaseline = ratio(float64(row.P99), float64(base.P99)) })
}

func echoOne(ctx context.Context, c Config, e EchoConfig, spec ServerSpec) (row EchoRow, err error) {
	s, err := startServer(ctx, c, spec)
	if err != nil {
		return row, err
	}
	defer s.stop(&err)
	if spec.NATS != "" {
		addr, ok := s.repl[spec.NATS]
		if !ok {
			addr = spec.NATS
		}
		stopBackend, err := echoBackend(addr, spec.Prefix)
		if err != nil {
			return row, err
		}
		defer stopBackend()
	}
	lc := c
	lc.Conns = e.Conns
	ps, err := loaders(lc, s.listen, func(n int) []string {
		procs := float64((e.Conns + c.PerProcess - 1) / c.PerProcess)
		return []string{"-mode", "echo", "-rate", "-1",
			"-messages", strconv.Itoa(e.Messages / int(procs)),
			"-msg-rate", strconv.FormatFloat(e.MsgRate/procs, 'f', 1, 64),
			"-size", strconv.Itoa(e.MsgSize), "-duration", "10m", "-max-duration", "30m"}
	})
	if err != nil {
		return row, err
	}
	results, err := loadersDone(ctx, ps)
	if err != nil {
		return row, err
	}
	row.Server = spec.Name
	for _, r := range results {
		row.Conns += r.Opened
		row.Sent += r.Sent
		row.Received += r.Received
		row.PerSecond += r.MsgsPerSec
		// Quantiles of separate processes cannot be merged: report the worst.
		row.P50 = max(row.P50, r.RTT.P50)
		row.P99 = max(row.P99, r.RTT.P99)
		row.P999 = max(row.P999, r.RTT.P999)
	}
	fmt.Fprintf(c.Log, "%s: %d/%d replies, p99 %v\n", spec.Name, row.Received, row.Sent, row.P99)
	return row, nil
}

// echoBackend answers every route request on the NATS server at addr with
// the body of the MESSAGE event, and returns its stop function.
func echoBackend(addr, prefix string) (func(), error) {
	defaults.Set(&prefix, "switchboard")
	nc, err := nats.Connect("nats://"+addr, nats.Name("swbench-echo-backend"))
	if err != nil {
		return nil, fmt.Errorf("swbench: echo backend: connect %s: %w", addr, err)
	}
	_, err = nc.QueueSubscribe(prefix+".route.>", "swbench-echo", func(m *nats.Msg) {
		if m.Reply == "" {
			return
		}
		var ev struct {
			Body string `json:"body"`
		}
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		_ = m.Respond([]byte(ev.Body))
	})
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("swbench: echo backend: subscribe: %w", err)
	}
	return func() { _ = nc.Drain() }, nil
}

// WriteEchoTable prints echo rows.
func WriteEchoTable(w io.Writer, rows []EchoRow) {
	tw := newTable(w)
	fmt.Fprintln(tw, "server\tconnections\tsent\treceived\tmsgs/s\tp50\tp99\tp999\tp99 vs baseline\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%v\t%v\t%v\t%.3f\t\n", r.Server, r.Conns, r.Sent, r.Received, r.PerSecond,
			r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.P999.Round(time.Microsecond), r.P99VsBaseline)
	}
	_ = tw.Flush()
}
