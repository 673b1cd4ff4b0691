package app

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func jsonLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not one JSON object per line: %q", l)
		}
		out = append(out, m)
	}
	return out
}

// While Redis is down go-redis reports every failed dial, several times a
// second: one line per message per interval, with the count suppressed.
func TestRedisLoggerRateLimitsEachMessage(t *testing.T) {
	var buf bytes.Buffer
	l := newRedisLogger(slog.New(slog.NewJSONHandler(&buf, nil)), time.Hour)
	const dial = "redis: connection pool: failed to dial after %d attempts: %v\n"
	for i := 0; i < 100; i++ {
		l.Printf(context.Background(), dial, 5, "connection refused")
	}
	l.Printf(context.Background(), "sentinel: new master=%q addr=%q", "m", "10.0.0.1:6379")
	lines := jsonLines(t, &buf)
	if len(lines) != 2 {
		t.Fatalf("%d lines for 100 dial failures and 1 other message, want 2: %s", len(lines), buf.String())
	}
	if lines[0]["msg"] != "connection pool: failed to dial after 5 attempts: connection refused" || lines[0]["level"] != "WARN" {
		t.Fatalf("first line %v: want the message without go-redis's prefix and newline, at WARN", lines[0])
	}
	// The interval passes: the next one says how many were not logged.
	l.mu.Lock()
	l.last[dial].at = time.Now().Add(-2 * time.Hour)
	l.mu.Unlock()
	buf.Reset()
	l.Printf(context.Background(), dial, 5, "connection refused")
	lines = jsonLines(t, &buf)
	if len(lines) != 1 || lines[0]["suppressed"] != float64(99) {
		t.Fatalf("after the interval: %v, want one line with suppressed=99", lines)
	}
}

func TestNATSServerLoggerLevels(t *testing.T) {
	var buf bytes.Buffer
	l := natsServerLogger{log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	l.Noticef("Server is ready")     // debug here: dropped at info
	l.Warnf("slow consumer %s", "x") // kept
	l.Errorf("error %d", 1)
	l.Fatalf("listen failed\n")
	lines := jsonLines(t, &buf)
	want := []string{"WARN", "ERROR", "ERROR"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d: %s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if lines[i]["level"] != w {
			t.Fatalf("line %d level %v, want %s", i, lines[i]["level"], w)
		}
	}
	if lines[2]["msg"] != "listen failed" {
		t.Fatalf("msg %q: want the trailing newline trimmed", lines[2]["msg"])
	}
}
