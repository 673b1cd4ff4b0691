package swbench

import (
	"context"
	"fmt"
	"io"
	"syscall"
	"time"
)

// DrainRow is one server's graceful-shutdown figures.
type DrainRow struct {
	Server         string  `json:"server"`
	Conns          int     `json:"connections"`
	Seconds        float64 `json:"drainSeconds"`
	ClosedByServer int     `json:"closedByServer"`
	ClosedClean    int     `json:"closedClean"`
}

// RunDrain measures, for each server, the time from SIGTERM to exit with
// c.Conns idle connections open, and how the clients saw their connections
// end (closed by the server with a close frame, or not).
func RunDrain(ctx context.Context, c Config) ([]DrainRow, error) {
	return runEach(c, "drain", func(c Config, spec ServerSpec) (DrainRow, error) { return drainOne(ctx, c, spec) }, nil)
}

func drainOne(ctx context.Context, c Config, spec ServerSpec) (row DrainRow, err error) {
	s, err := startServer(ctx, c, spec)
	if err != nil {
		return row, err
	}
	defer func() { _ = s.p.stop(60 * time.Second) }()
	ps, open, err := idleLoaders(ctx, c, s.listen)
	if err != nil {
		return row, err
	}
	start := time.Now()
	_ = s.p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.p.waited:
	case <-time.After(5 * time.Minute):
		stopAll(ps)
		return row, fmt.Errorf("did not exit within 5m of SIGTERM")
	}
	row = DrainRow{Server: spec.Name, Conns: open, Seconds: time.Since(start).Seconds()}
	results, err := finish(ps, 60*time.Second)
	for _, r := range results {
		row.ClosedByServer += r.ClosedByServer
		row.ClosedClean += r.ClosedClean
	}
	fmt.Fprintf(c.Log, "%s: %d connections drained in %.2fs\n", spec.Name, open, row.Seconds)
	return row, err
}

// WriteDrainTable prints the drain rows.
func WriteDrainTable(w io.Writer, rows []DrainRow) {
	tw := newTable(w)
	fmt.Fprintln(tw, "server\tconnections\tSIGTERM → exit\tclosed by server\tclean close handshakes\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%.2fs\t%d\t%d\t\n", r.Server, r.Conns, r.Seconds, r.ClosedByServer, r.ClosedClean)
	}
	tw.Flush()
}
