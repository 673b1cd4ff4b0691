package cluster

import (
	"context"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRegister measures registrations per second against a real
// redis-server: "batched" through the Batcher from many concurrent
// connects, "unbatched" one round trip per registration, for comparison.
func BenchmarkRegister(b *testing.B) {
	reg, _ := startRedisRegistry(b)
	recs := make([]ConnRecord, 4096)
	for i := range recs {
		recs[i] = record("bench-node")
	}
	b.Run("batched", func(b *testing.B) {
		m, _ := NewMetrics(nil)
		bat, err := NewBatcher(BatcherConfig{}, reg, m)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		var wg sync.WaitGroup
		wg.Go(func() { _ = bat.Run(ctx) })
		defer func() {
			_ = bat.Shutdown(ctx)
			wg.Wait()
		}()
		var mu sync.Mutex
		next := 0
		b.SetParallelism(256) // thousands of concurrent connects on a big edge
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.Lock()
				r := recs[next%len(recs)]
				next++
				mu.Unlock()
				if err := bat.Register(ctx, r); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "regs/s")
	})
	b.Run("unbatched", func(b *testing.B) {
		ctx := context.Background()
		var mu sync.Mutex
		next := 0
		b.SetParallelism(256)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.Lock()
				r := recs[next%len(recs)]
				next++
				mu.Unlock()
				if err := reg.Register(ctx, r); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "regs/s")
	})
}

// BenchmarkRouterPost measures a cross-node @connections POST: router on
// node A → NATS → command server on node B → B's hub, and back. Reports the
// latency percentiles of one post at a time, and the CPU time of this
// process (router, NATS server and owner together) per post.
func BenchmarkRouterPost(b *testing.B) {
	reg, _ := startRedisRegistry(b)
	tn := startTwoNodes(b, reg)
	onB := tn.hubB.add(b, reg)
	payload := make([]byte, 256)
	ctx := context.Background()
	// Warm the owner cache and the connections.
	if err := tn.routerA.Post(ctx, onB.ID, payload, false); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	cpu0 := processCPU(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := tn.routerA.Post(ctx, onB.ID, payload, false); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	// The fake hub keeps every post; drop them so memory stays flat.
	tn.hubB.mu.Lock()
	tn.hubB.posts = nil
	tn.hubB.mu.Unlock()
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
