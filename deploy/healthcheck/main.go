// Command healthcheck is the container health probe of the Switchboard image:
// `healthcheck URL` exits 0 when a GET of URL answers 2xx within the timeout,
// and 1 otherwise. The runtime image is distroless (no shell, curl or wget),
// so docker-compose health checks run this instead. Kubernetes does not need
// it: its probes are httpGet on the admin port.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	timeout := flag.Duration("timeout", 2*time.Second, "give up after this long")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: healthcheck [-timeout 2s] URL   (default URL http://127.0.0.1:9091/readyz)")
		flag.PrintDefaults()
	}
	flag.Parse()
	url := "http://127.0.0.1:9091/readyz"
	if flag.NArg() > 1 {
		flag.Usage()
		os.Exit(2)
	}
	if flag.NArg() == 1 {
		url = flag.Arg(0)
	}
	if err := probe(context.Background(), url, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

// errStatus marks an answer that was not 2xx.
var errStatus = errors.New("unhealthy status")

// probe GETs url and succeeds on a 2xx answer.
func probe(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("probe %s: %w: %s", url, errStatus, resp.Status)
	}
	return nil
}
