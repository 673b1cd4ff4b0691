package swbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The machine's floor under the cross-node latencies: a post crosses at
// least two loopback round trips between processes (driver → router →
// edge and back), so its p99 cannot be lower than what one such round trip
// gets at the same moment. The probe measures that: swbench pings a child
// process of its own ("swbench hop-echo") over loopback TCP once a
// millisecond while the posts run, and reads how much CPU time the
// hypervisor stole (/proc/stat), which arrives in slices of milliseconds.

// hopEchoReady begins hop-echo's ready line, followed by its address.
const hopEchoReady = "hop-echo ready "

// HopEchoCLI is the probe's far end: it listens on loopback, prints its
// ready line with the address on stderr, and echoes one connection until it
// closes.
func HopEchoCLI(ctx context.Context, stderr io.Writer) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("swbench hop-echo: %w", err)
	}
	defer ln.Close()
	fmt.Fprintln(stderr, hopEchoReady+ln.Addr().String())
	go func() { <-ctx.Done(); ln.Close() }()
	c, err := ln.Accept()
	if err != nil {
		return nil // stopped before the probe dialled
	}
	defer c.Close()
	go func() { <-ctx.Done(); c.Close() }()
	_, _ = io.Copy(c, c)
	return nil
}

// hopProbe pings a hop-echo child until stopped.
type hopProbe struct {
	echo *proc
	conn net.Conn
	stop chan struct{}
	done chan struct{}
	lat  []time.Duration
	err  error
	// trips counts the round trips so far (lat is the run loop's alone
	// until done).
	trips atomic.Int64
}

// hopEchoCommand runs this binary's hop-echo.
func hopEchoCommand() (Command, error) {
	self, err := os.Executable()
	if err != nil {
		return Command{}, fmt.Errorf("swbench: floor probe: %w", err)
	}
	return Command{Argv: []string{self, "hop-echo"}}, nil
}

// startHopProbe starts the child (hop-echo) and begins pinging it.
func startHopProbe(c Command) (*hopProbe, error) {
	echo, err := startReady("hop-echo", c, nil, hopEchoReady)
	if err != nil {
		return nil, err
	}
	p := &hopProbe{echo: echo, stop: make(chan struct{}), done: make(chan struct{})}
	select {
	case line := <-echo.ready:
		p.conn, err = net.DialTimeout("tcp", strings.TrimPrefix(line, hopEchoReady), 5*time.Second)
	case <-echo.waited:
		err = fmt.Errorf("exited before ready: %v; stderr:\n%s", echo.err, echo.tail.String())
	case <-time.After(10 * time.Second):
		err = errors.New("not ready within 10s")
	}
	if err != nil {
		_ = echo.stop(time.Second)
		return nil, fmt.Errorf("swbench: floor probe: %w", err)
	}
	go p.run()
	return p, nil
}

func (p *hopProbe) run() {
	defer close(p.done)
	ping, pong := make([]byte, 16), make([]byte, 16)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		t := time.Now()
		_ = p.conn.SetDeadline(t.Add(10 * time.Second))
		if _, err := p.conn.Write(ping); err != nil {
			p.err = err
			return
		}
		if _, err := io.ReadFull(p.conn, pong); err != nil {
			p.err = err
			return
		}
		p.lat = append(p.lat, time.Since(t))
		p.trips.Add(1)
	}
}

// finish stops the probe and returns its round trips' p50 and p99.
func (p *hopProbe) finish() (p50, p99 time.Duration, err error) {
	close(p.stop)
	<-p.done
	p.conn.Close()
	_ = p.echo.stop(time.Second) // its exit says nothing of the round trips
	if p.err != nil {
		return 0, 0, fmt.Errorf("swbench: floor probe: %w", p.err)
	}
	if len(p.lat) == 0 {
		return 0, 0, errors.New("swbench: floor probe: no round trip")
	}
	return quantile(p.lat, 0.50), quantile(p.lat, 0.99), nil
}

// cpuTicks are the machine's CPU times from /proc/stat's first line.
type cpuTicks struct{ total, steal uint64 }

func readCPUTicks() (cpuTicks, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTicks{}, fmt.Errorf("swbench: %w", err)
	}
	return parseCPUTicks(b)
}

// parseCPUTicks reads the aggregate "cpu" line of /proc/stat: user nice
// system idle iowait irq softirq steal (guest time is already in user).
func parseCPUTicks(stat []byte) (cpuTicks, error) {
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTicks{}, fmt.Errorf("swbench: /proc/stat: unexpected first line %q", line)
	}
	var t cpuTicks
	for i, s := range f[1:9] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTicks{}, fmt.Errorf("swbench: /proc/stat: field %d: %w", i+1, err)
		}
		t.total += v
		if i == 7 {
			t.steal = v
		}
	}
	return t, nil
}

// stealShare is the fraction of CPU time stolen between a and b.
func stealShare(a, b cpuTicks) float64 {
	if b.total <= a.total {
		return 0
	}
	return float64(b.steal-a.steal) / float64(b.total-a.total)
}
