// Package connectd is the benchmarks' connection authorizer, so that a
// connect-rate figure includes a round trip to a backend, as it would in
// production: it answers Switchboard's $connect over NATS (pkg/backend), or
// Centrifugo's connect proxy over HTTP (and the baseline's -connect-url
// call, which has the proxy's shape). It allows every connection. A
// Switchboard connection whose upgrade URL has ?group=g is put in group g.
package connectd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboardgw/switchboard/pkg/backend"
)

// ReadyLine is written to stderr once the authorizer answers.
const ReadyLine = "connectd: ready"

// cfAllow is the connect proxy's answer: an anonymous user (the empty
// user ID), as with Centrifugo's insecure mode, so that no per-user state
// is kept that Switchboard's side of the comparison does not keep either.
var cfAllow = []byte(`{"result":{"user":""}}`)

// CLI runs "connectd -nats URL [-prefix P]" or "connectd -http ADDR".
func CLI(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("connectd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		natsURL = fs.String("nats", "", "answer Switchboard's $connect on this NATS server")
		prefix  = fs.String("prefix", "", "Switchboard's subject prefix (default switchboard)")
		listen  = fs.String("http", "", "serve Centrifugo's connect proxy (POST, any path) on this loopback host:port")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case (*natsURL == "") == (*listen == ""):
		return errors.New("connectd: give exactly one of -nats and -http")
	case *natsURL != "":
		return serveNATS(ctx, *natsURL, *prefix, stderr)
	default:
		return serveHTTP(ctx, *listen, stderr)
	}
}

func serveNATS(ctx context.Context, url, prefix string, stderr io.Writer) error {
	nc, err := nats.Connect(url, nats.Name("connectd"))
	if err != nil {
		return fmt.Errorf("connectd: connect %s: %w", url, err)
	}
	defer nc.Close()
	b, err := backend.New(nc, backend.Options{Prefix: prefix, Queue: "connectd"})
	if err != nil {
		return fmt.Errorf("connectd: %w", err)
	}
	b.OnConnect(func(_ context.Context, r *backend.ConnectRequest) backend.ConnectResponse {
		resp := backend.ConnectResponse{UserID: r.QueryStringParameters["user"]}
		if g := r.QueryStringParameters["group"]; g != "" {
			resp.Groups = []string{g}
		}
		return resp
	})
	if err := b.Start(ctx); err != nil {
		return fmt.Errorf("connectd: %w", err)
	}
	fmt.Fprintln(stderr, ReadyLine)
	<-ctx.Done()
	return b.Drain()
}

// ProxyHandler answers every Centrifugo connect proxy request with an
// allow.
func ProxyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(cfAllow)
	})
}

func serveHTTP(ctx context.Context, addr string, stderr io.Writer) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() {
		return fmt.Errorf("connectd: -http %q: want a loopback host:port", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("connectd: %w", err)
	}
	srv := &http.Server{Handler: ProxyHandler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintln(stderr, ReadyLine)
	select {
	case err := <-errc:
		return fmt.Errorf("connectd: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-errc
	return err
}
