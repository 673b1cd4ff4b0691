package testenv

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestNATSRequestReplyOnLoopbackRandomPort(t *testing.T) {
	n := StartNATS(t)
	if !strings.HasPrefix(n.URL(), "nats://127.0.0.1:") || strings.HasSuffix(n.URL(), ":4222") {
		t.Fatalf("URL %q: want a random loopback port, never 4222", n.URL())
	}
	nc := n.Connect(t)
	if _, err := nc.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		t.Fatal(err)
	}
	reply, err := nc.Request("echo", []byte("hi"), 10*time.Second)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if string(reply.Data) != "hi" {
		t.Fatalf("reply %q, want %q", reply.Data, "hi")
	}
}

func TestNATSRestartKeepsURLAndClientsReconnect(t *testing.T) {
	n := StartNATS(t)
	url := n.URL()
	nc := n.Connect(t)
	n.Restart()
	if n.URL() != url {
		t.Fatalf("URL changed across restart: %q → %q", url, n.URL())
	}
	deadline := time.Now().Add(20 * time.Second)
	for !nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("client did not reconnect after restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.Shutdown()
	n.Shutdown() // safe twice
	if n.Server() != nil {
		t.Fatal("server still set after Shutdown")
	}
}

func TestNATSJetStreamSurvivesRestart(t *testing.T) {
	n := StartNATS(t, WithJetStream())
	nc := n.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.x", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	n.Restart()
	var got *jetstream.RawStreamMsg
	for got == nil {
		s, err := js.Stream(ctx, "T")
		if err == nil {
			got, err = s.GetMsg(ctx, 1)
		}
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("stream message after restart: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if string(got.Data) != "kept" {
		t.Fatalf("got %q", got.Data)
	}
}
