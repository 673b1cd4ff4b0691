// Package swbench drives side-by-side benchmarks: it starts each server
// under test (the goroutine-per-connection baseline, the Switchboard edge),
// loads it with swload processes and reads what it costs from /proc and its
// Prometheus /metrics, so every figure comes with the baseline's in the same
// run.
package swbench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrNotFound is returned when a figure is missing from its source.
var ErrNotFound = errors.New("swbench: figure not found")

// ReadRSS returns a process's resident set size in bytes (VmRSS in
// /proc/<pid>/status).
func ReadRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("swbench: read status of pid %d: %w", pid, err)
	}
	return parseVmRSS(bytes.NewReader(b))
}

func parseVmRSS(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("swbench: malformed VmRSS line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("swbench: VmRSS value: %w", err)
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("swbench: read status: %w", err)
	}
	return 0, fmt.Errorf("%w: VmRSS", ErrNotFound)
}

// ParseMetrics reads Prometheus text exposition and returns the value of
// every sample that has no labels, by metric name. Labelled samples are
// skipped: the figures compared here (go_goroutines,
// go_memstats_heap_inuse_bytes, process_resident_memory_bytes) have none.
func ParseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || strings.ContainsAny(f[0], "{}") {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return nil, fmt.Errorf("swbench: metric %s: bad value %q: %w", f[0], f[1], err)
		}
		out[f[0]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("swbench: read metrics: %w", err)
	}
	return out, nil
}

// noKeepAlive: a scrape must not leave a connection (and its goroutine)
// open in the server being measured.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}

// Scrape fetches and parses a /metrics URL.
func Scrape(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("swbench: scrape %s: %w", url, err)
	}
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		return nil, fmt.Errorf("swbench: scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("swbench: scrape %s: status %s", url, resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// Sample is what a server costs at one moment.
type Sample struct {
	RSS        float64 // bytes, from /proc
	HeapInuse  float64 // bytes, go_memstats_heap_inuse_bytes
	Goroutines float64 // go_goroutines
}

// Measure reads a server's RSS from /proc and its heap and goroutines from
// its /metrics.
func Measure(ctx context.Context, pid int, metricsURL string) (Sample, error) {
	rss, err := ReadRSS(pid)
	if err != nil {
		return Sample{}, err
	}
	m, err := Scrape(ctx, metricsURL)
	if err != nil {
		return Sample{}, err
	}
	s := Sample{RSS: float64(rss)}
	var ok1, ok2 bool
	s.HeapInuse, ok1 = m["go_memstats_heap_inuse_bytes"]
	s.Goroutines, ok2 = m["go_goroutines"]
	if !ok1 || !ok2 {
		return Sample{}, fmt.Errorf("%w: %s lacks go_memstats_heap_inuse_bytes or go_goroutines", ErrNotFound, metricsURL)
	}
	return s, nil
}

// forceGC asks a server to collect garbage: net/http/pprof's heap handler
// runs runtime.GC before it writes the profile (?gc=1).
func forceGC(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
