package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestProbeSucceedsOnlyOn2xx(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	}))
	defer srv.Close()

	err := probe(context.Background(), srv.URL+"/readyz", 10*time.Second)
	if !errors.Is(err, errStatus) {
		t.Fatalf("draining node (503): got %v, want errStatus", err)
	}
	ready.Store(true)
	if err := probe(context.Background(), srv.URL+"/readyz", 10*time.Second); err != nil {
		t.Fatalf("ready node (200): got %v, want nil", err)
	}
}

func TestProbeFailsWhenNothingListens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	if err := probe(context.Background(), "http://"+addr+"/readyz", 10*time.Second); err == nil {
		t.Fatal("probe of a closed port succeeded")
	}
}

func TestProbeGivesUpAfterTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	if err := probe(context.Background(), srv.URL, 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung server: got %v, want a deadline error", err)
	}
}
