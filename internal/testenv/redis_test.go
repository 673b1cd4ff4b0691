package testenv

import (
	"errors"
	"strings"
	"testing"
)

func TestStartRedisAnswersAndKeepsNoDataAcrossRestart(t *testing.T) {
	r := StartRedis(t)
	if strings.HasSuffix(r.Addr(), ":6379") {
		t.Fatalf("test Redis must not use the machine's port 6379, got %s", r.Addr())
	}
	if got, err := redisCommand(r.Addr(), "SET", "k", "v"); err != nil || got != "OK" {
		t.Fatalf("SET = %q, %v; want OK", got, err)
	}
	if got, err := redisCommand(r.Addr(), "GET", "k"); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want v", got, err)
	}
	if want := "redis://" + r.Addr() + "/0"; r.URL() != want {
		t.Fatalf("URL = %q, want %q", r.URL(), want)
	}

	r.Kill()
	if _, err := redisCommand(r.Addr(), "PING"); err == nil {
		t.Fatal("PING answered after Kill")
	}

	addr := r.Addr()
	r.Restart()
	if r.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, r.Addr())
	}
	if _, err := redisCommand(r.Addr(), "GET", "k"); !errors.Is(err, errRedisNil) {
		t.Fatalf("GET after Restart: err = %v, want nil reply (empty data)", err)
	}
}

func TestStartRedisClusterIsReady(t *testing.T) {
	c := StartRedisCluster(t, 3)
	if len(c.Addrs()) != 3 {
		t.Fatalf("Addrs = %v, want 3 masters", c.Addrs())
	}
	for _, a := range c.Addrs() {
		info, err := redisCommand(a, "CLUSTER", "INFO")
		if err != nil {
			t.Fatalf("CLUSTER INFO on %s: %v", a, err)
		}
		for _, want := range []string{"cluster_state:ok", "cluster_known_nodes:3", "cluster_slots_assigned:16384"} {
			if !strings.Contains(info, want) {
				t.Fatalf("CLUSTER INFO on %s lacks %q:\n%s", a, want, info)
			}
		}
	}
}
