package app

import (
	"context"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncLog is a slog text sink read while the edge writes to it.
type syncLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncLog) line(substr string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// A port that is taken fails the start at once, naming the flag, the cause
// and the fix, on one line; the embedded NATS server's used to wait 10s
// and say only "did not start".
func TestTakenPortsFailAtOnceNamingTheFlag(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	for _, tc := range []struct{ flag, fix string }{
		{"nats-embedded-listen", "-nats-url"},
		{"listen", "choose another address"},
		{"api-listen", "choose another address"},
		{"admin-listen", "choose another address"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			start := time.Now()
			e, err := NewEdge(testEdgeConfig(t, "-"+tc.flag, addr), quiet)
			took := time.Since(start)
			if err == nil {
				_ = e.Shutdown(context.Background())
				t.Fatalf("started with -%s on a taken port", tc.flag)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "-"+tc.flag+" "+addr+": ") || !strings.Contains(msg, "address already in use") ||
				!strings.Contains(msg, tc.fix) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line naming -%s %s, the cause and %q", msg, tc.flag, addr, tc.fix)
			}
			if took > 5*time.Second {
				t.Fatalf("took %s to fail, want at once (the old wait was 10s)", took)
			}
		})
	}
}

// doubled matches an error that repeats its own prefix ("lifecycle:
// lifecycle: …").
var doubled = regexp.MustCompile(`(?:^|: )([a-z][a-z ]*): ([a-z][a-z ]*): `)

func TestStartupErrorsDoNotRepeatTheirPrefix(t *testing.T) {
	for _, args := range [][]string{
		{"-route-selection-expression", "$bogus"},
		{"-routes", "a.b"},
		{"-two-way-routes", "a.b"},
		{"-api-tokens-file", t.TempDir() + "/missing"},
	} {
		_, err := NewEdge(testEdgeConfig(t, args...), quiet)
		if err == nil {
			t.Fatalf("%v: started", args)
		}
		for _, m := range doubled.FindAllStringSubmatch(err.Error(), -1) {
			if m[1] == m[2] {
				t.Errorf("%v: %q repeats %q", args, err, m[1]+": ")
			}
		}
	}
}

// Without auth the API is moved to loopback: the warning names the address
// asked for and the one bound. The start-up line prints every listener as
// bound, saying when that is every interface (not 127.0.0.1).
func TestStartupLogSaysWhatIsBound(t *testing.T) {
	var logs syncLog
	cfg := testEdgeConfig(t, "-api-listen", "0.0.0.0:0", "-admin-listen", ":0")
	e, err := NewEdge(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	warn := logs.line("-api-listen 0.0.0.0:0")
	if !strings.Contains(warn, "level=WARN") || !strings.Contains(warn, "bound to "+e.APIAddr()) || !strings.Contains(warn, "-api-tokens") {
		t.Fatalf("rebind warning %q: want it to name 0.0.0.0:0, %s and how to serve other hosts", warn, e.APIAddr())
	}
	if !strings.HasPrefix(e.APIAddr(), "127.0.0.1:") {
		t.Fatalf("API bound to %s without auth", e.APIAddr())
	}
	eventually(t, "start-up line", func() bool { return logs.line("edge node started") != "" })
	started := logs.line("edge node started")
	_, adminPort, _ := net.SplitHostPort(e.AdminAddr())
	if !strings.Contains(started, "admin=\"[::]:"+adminPort+" (every interface)\"") || !strings.Contains(started, "api="+e.APIAddr()) {
		t.Fatalf("start-up line %q: want admin on every interface and the API's loopback address", started)
	}
}
