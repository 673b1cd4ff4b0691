package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"
)

// Libraries that log on their own are routed through the process's slog
// logger, so -log-format json output stays one JSON object per line.

// routeLibraryLogs makes log the destination of every library logger that is
// process-wide: the standard log package (net/http's server errors, among
// others) and go-redis. Main calls it once, after building the logger; a
// program embedding NewEdge or NewRouter without Main chooses for itself.
func routeLibraryLogs(log *slog.Logger) {
	slog.SetDefault(log) // also points the standard "log" package at log's handler
	redis.SetLogger(newRedisLogger(log.With("lib", "go-redis"), redisLogEvery))
}

// redisLogEvery is how often one go-redis message (one call site: its
// format string) is logged: while Redis is down its pool reports every
// failed dial, several times a second.
const redisLogEvery = 10 * time.Second

// redisLogger adapts slog to go-redis's logger. go-redis gives no level;
// what it logs at its default level (errors) is about Redis being
// unreachable or misbehaving, which the node rides out: a warning. Each
// message is logged at most once per interval, with how many were
// suppressed since; the map is bounded by go-redis's call sites.
type redisLogger struct {
	log   *slog.Logger
	every time.Duration

	mu   sync.Mutex
	last map[string]*redisLogState
}

type redisLogState struct {
	at         time.Time
	suppressed int
}

func newRedisLogger(log *slog.Logger, every time.Duration) *redisLogger {
	return &redisLogger{log: log, every: every, last: map[string]*redisLogState{}}
}

func (l *redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if !l.log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	st := l.last[format]
	if st == nil {
		st = &redisLogState{}
		l.last[format] = st
	}
	if !st.at.IsZero() && now.Sub(st.at) < l.every {
		st.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.at, st.suppressed = now, 0
	l.mu.Unlock()
	if suppressed > 0 {
		l.log.WarnContext(ctx, libMessage(format, v, "redis: "), "suppressed", suppressed)
		return
	}
	l.log.WarnContext(ctx, libMessage(format, v, "redis: "))
}

// natsServerLogger adapts slog to the embedded NATS server's logger. Its
// notices (the start-up banner, mostly) are debug here: the edge logs its
// own line about the embedded server.
type natsServerLogger struct {
	log *slog.Logger
	// fatal, if set, receives the first fatal message (non-blocking): the
	// start-up waits on it instead of a timeout.
	fatal chan<- string
}

var _ server.Logger = natsServerLogger{}

func (l natsServerLogger) Noticef(format string, v ...any) { l.at(slog.LevelDebug, format, v) }
func (l natsServerLogger) Warnf(format string, v ...any)   { l.at(slog.LevelWarn, format, v) }
func (l natsServerLogger) Errorf(format string, v ...any)  { l.at(slog.LevelError, format, v) }

// Fatalf logs and tells the start-up (fatal): nats-server returns after it,
// and the edge fails on its own terms.
func (l natsServerLogger) Fatalf(format string, v ...any) {
	l.at(slog.LevelError, format, v)
	if l.fatal != nil {
		select {
		case l.fatal <- libMessage(format, v, ""):
		default:
		}
	}
}
func (l natsServerLogger) Debugf(format string, v ...any) { l.at(slog.LevelDebug, format, v) }
func (l natsServerLogger) Tracef(format string, v ...any) { l.at(slog.LevelDebug, format, v) }

func (l natsServerLogger) at(level slog.Level, format string, v []any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, libMessage(format, v, ""))
}

// libMessage formats a library's printf-style line as one slog message:
// without the library's own prefix and trailing newline, multi-line text
// (a stack trace) kept in the message where the JSON encoder escapes it.
func libMessage(format string, v []any, prefix string) string {
	msg := fmt.Sprintf(format, v...)
	msg = strings.TrimPrefix(msg, prefix)
	return strings.TrimRight(msg, "\r\n")
}
