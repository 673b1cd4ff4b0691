package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

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
	redis.SetLogger(redisLogger{log: log.With("lib", "go-redis")})
}

// redisLogger adapts slog to go-redis's logger. go-redis gives no level;
// what it logs at its default level (errors) is about Redis being
// unreachable or misbehaving, which the node rides out: a warning.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if !l.log.Enabled(ctx, slog.LevelWarn) {
		return
	}
	l.log.WarnContext(ctx, libMessage(format, v, "redis: "))
}

// natsServerLogger adapts slog to the embedded NATS server's logger. Its
// notices (the start-up banner, mostly) are debug here: the edge logs its
// own line about the embedded server.
type natsServerLogger struct{ log *slog.Logger }

var _ server.Logger = natsServerLogger{}

func (l natsServerLogger) Noticef(format string, v ...any) { l.at(slog.LevelDebug, format, v) }
func (l natsServerLogger) Warnf(format string, v ...any)   { l.at(slog.LevelWarn, format, v) }
func (l natsServerLogger) Errorf(format string, v ...any)  { l.at(slog.LevelError, format, v) }

// Fatalf only logs: nats-server returns after it, and the edge notices the
// server is not ready (or gone) and fails on its own terms.
func (l natsServerLogger) Fatalf(format string, v ...any) { l.at(slog.LevelError, format, v) }
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
