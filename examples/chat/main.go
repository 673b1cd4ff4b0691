// Command chat is an example backend for Switchboard: a chat with rooms,
// written with the Go backend SDK (pkg/backend) and the @connections client
// (pkg/connections), plus a static page that talks to the gateway.
//
//	go run ./cmd/edge -two-way-routes rooms   # the gateway
//	go run ./examples/chat                    # this backend; open http://127.0.0.1:8000/
//
// Clients connect to ws://127.0.0.1:8080/?name=alice&room=lobby and send
// {"action":"join","room":"x"}, {"action":"leave"}, {"action":"send","text":"…"}
// and {"action":"rooms"}. See docs/examples.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	var cfg Config
	fs := flag.NewFlagSet("chat", flag.ExitOnError)
	// Each flag falls back to an environment variable (docker-compose sets them).
	fs.StringVar(&cfg.NATSURL, "nats-url", env("SWITCHBOARD_NATS_URL", "nats://127.0.0.1:4223"), "gateway NATS URL (env SWITCHBOARD_NATS_URL)")
	fs.StringVar(&cfg.Prefix, "prefix", env("SWITCHBOARD_PREFIX", "switchboard"), "gateway NATS subject prefix (env SWITCHBOARD_PREFIX)")
	fs.StringVar(&cfg.APIURL, "api", env("SWITCHBOARD_API_URL", "http://127.0.0.1:9090"), "@connections API endpoint (env SWITCHBOARD_API_URL)")
	fs.StringVar(&cfg.APIToken, "api-token", env("SWITCHBOARD_API_TOKEN", ""), "@connections API bearer token (env SWITCHBOARD_API_TOKEN)")
	fs.StringVar(&cfg.HTTPListen, "http", env("CHAT_HTTP", "127.0.0.1:8000"), "where to serve the chat page (env CHAT_HTTP)")
	fs.StringVar(&cfg.WSURL, "ws", env("CHAT_WS_URL", "ws://127.0.0.1:8080/"), "gateway WebSocket URL the page connects to (env CHAT_WS_URL)")
	_ = fs.Parse(os.Args[1:])

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "chat:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// run serves the chat backend until ctx ends.
func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	c, err := newChat(cfg, log)
	if err != nil {
		return err
	}
	return c.Run(ctx)
}
