package groups

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboardgw/switchboard/internal/edge"
	"github.com/switchboardgw/switchboard/internal/testenv"
)

// BenchmarkFanoutCompression measures one edge delivering a 1 KiB JSON
// message to the 10,000 members of a group, with and without
// permessage-deflate: each op is one message (10,000 frames), so
// -benchtime 10x is 100k frames. The members are real WebSocket clients
// held by a swload process (bench/swload, built here): this process's
// open-file limit is spent on the edge's side only. In process: the
// message enters the delivery path directly (no NATS).
//
//	plain:   -compression off
//	deflate: -compression on, every member negotiated permessage-deflate
//
// It reports bytes written to the members' sockets per frame, this
// process's CPU time (user+system: the edge's delivery and writes) per
// 100k frames, and the part of it spent compressing.
//
//	go test -run '^$' -bench FanoutCompression -benchtime 10x ./internal/groups
func BenchmarkFanoutCompression(b *testing.B) {
	const members = 10000
	swload := buildSwload(b)
	payload := jsonPayload(1024)
	for _, mode := range []struct {
		name    string
		deflate bool
	}{{"plain", false}, {"deflate", true}} {
		b.Run(mode.name, func(b *testing.B) {
			nt := testenv.StartNATS(b)
			reg := prometheus.NewRegistry()
			svc, err := New(Config{NodeID: "bench"}, Deps{NC: nt.Connect(b), Store: NewMemoryStore(), Registerer: reg, Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			srv, err := edge.New(edge.Config{Listen: "127.0.0.1:0", MaxQueueBytes: 64 << 20, DrainWindow: 10 * time.Millisecond,
				Compression: mode.deflate, IdleTimeout: time.Hour},
				edge.Options{NodeID: "bench", Handler: benchHandler{svc}, Registerer: reg, Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); _ = svc.Run(context.Background()) }()
			go func() { defer wg.Done(); _ = srv.Run(context.Background()) }()
			b.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				_ = srv.Shutdown(ctx)
				_ = svc.Shutdown(ctx)
				wg.Wait()
			})
			args := []string{"-mode", "idle", "-target", srv.Addr().String(), "-n", fmt.Sprint(members),
				"-rate", "-1", "-concurrency", "128", "-hold", "1h"}
			if mode.deflate {
				args = append(args, "-deflate")
			}
			holdMembers(b, swload, args)
			subject := svc.subj.groupSubject("bench")
			eventually(b, "every member to join", func() bool { return svc.idx.members(subject) == members })
			if mode.deflate {
				if n := counterValue(b, reg, "switchboard_compression_negotiated_total", "", ""); n != members {
					b.Fatalf("%v members negotiated compression, want %d", n, members)
				}
			}

			d := svc.newDeliverer()
			batch := []*nats.Msg{{Subject: subject, Data: encodeSend(payload, false, "")}}
			d.deliver(batch) // warm the pools
			waitWriters(b)
			g0 := runtime.NumGoroutine()
			wire0 := counterValue(b, reg, "switchboard_sent_bytes_total", "", "")
			zip0 := counterValue(b, reg, "switchboard_compression_seconds_total", "direction", "out")
			failed0 := counterValue(b, reg, "switchboard_group_deliveries_failed_total", "", "")
			cpu0 := cpuTime()
			b.ResetTimer()
			t0 := time.Now()
			for range b.N {
				d.deliver(batch)
			}
			// Writes that had to wait are finished by writer goroutines,
			// which exit once their connection's backlog is written.
			for runtime.NumGoroutine() > g0 {
				time.Sleep(time.Millisecond)
			}
			el := time.Since(t0)
			b.StopTimer()
			cpu := cpuTime() - cpu0
			frames := float64(b.N * members)
			if f := counterValue(b, reg, "switchboard_group_deliveries_failed_total", "", "") - failed0; f > 0 {
				b.Fatalf("%v frames failed", f)
			}
			wire := counterValue(b, reg, "switchboard_sent_bytes_total", "", "") - wire0
			zip := counterValue(b, reg, "switchboard_compression_seconds_total", "direction", "out") - zip0
			b.ReportMetric(wire/frames, "wire-B/frame")
			b.ReportMetric(cpu.Seconds()*1e3/frames*1e5, "cpu-ms/100k-frames")
			b.ReportMetric(zip*1e3/frames*1e5, "compress-ms/100k-frames")
			b.ReportMetric(frames/el.Seconds(), "frames/s")
		})
	}
}

// jsonPayload is a JSON document of n bytes, like a chat or feed message.
func jsonPayload(n int) []byte {
	var s strings.Builder
	s.WriteString(`{"type":"message","room":"lobby","items":[`)
	for i := 0; s.Len() < n-64; i++ {
		if i > 0 {
			s.WriteByte(',')
		}
		fmt.Fprintf(&s, `{"id":%d,"user":"user-%d","text":"hello, everyone","ts":%d}`, 1000+i, i%7, 1764633600+i)
	}
	s.WriteString(`],"seq":1}`)
	out := []byte(s.String())
	for len(out) < n {
		out = append(out[:len(out)-1], ' ', '}')
	}
	return out
}

// buildSwload builds bench/cmd/swload once for the benchmark.
func buildSwload(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./bench/cmd/swload")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build swload: %v\n%s", err, out)
	}
	return filepath.Join(dir, "swload")
}

// holdMembers runs swload with args until the benchmark ends, once it said
// every connection is open.
func holdMembers(b *testing.B, bin string, args []string) {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	ready := make(chan string, 1)
	go func() { // ends with swload's stderr
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "swload: ready") {
				ready <- sc.Text()
			}
		}
	}()
	select {
	case line := <-ready:
		if !strings.Contains(line, "failed=0") {
			b.Fatalf("swload: %s", line)
		}
	case <-time.After(2 * time.Minute):
		b.Fatal("swload did not open its connections")
	}
}

// waitWriters waits until no connection has a writer goroutine.
func waitWriters(b *testing.B) {
	b.Helper()
	n := runtime.NumGoroutine()
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m >= n {
			return
		}
		n = m
	}
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// counterValue reads a counter (with label=value, or unlabelled) from reg.
func counterValue(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if label != "" && l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
			if label == "" {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}
