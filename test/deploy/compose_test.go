package deploy_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

func loadCompose(t *testing.T, profiles ...string) *types.Project {
	t.Helper()
	dir := root(t)
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithWorkingDirectory(dir),
		cli.WithName("switchboard"),
		// No host environment: the file must stand on its own defaults.
		cli.WithEnv(nil),
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	return p
}

func TestComposeRunsTheLocalCluster(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"redis", "nats", "edge1", "edge2", "edge3", "router", "chat", "prometheus"} {
		if _, err := p.GetService(name); err != nil {
			t.Errorf("service %s: %v", name, err)
		}
	}
	if _, err := p.GetService("grafana"); err == nil {
		t.Error("grafana runs without --profile grafana")
	}
	if g := loadCompose(t, "grafana"); !slices.Contains(g.ServiceNames(), "grafana") {
		t.Error("--profile grafana does not start grafana")
	}

	nats, _ := p.GetService("nats")
	if !strings.HasPrefix(nats.Image, "nats:2.10") || !slices.Contains(nats.Command, "-js") {
		t.Errorf("nats: image %q command %v, want nats:2.10 with -js (JetStream)", nats.Image, nats.Command)
	}

	edgePorts := map[string]string{"edge1": "8081", "edge2": "8082", "edge3": "8083"}
	for name, host := range edgePorts {
		s, _ := p.GetService(name)
		assertPort(t, s, host, 8080)
		assertGateway(t, s)
		if ep := s.Entrypoint; len(ep) > 0 && ep[0] != "/usr/local/bin/edge" {
			t.Errorf("%s entrypoint %v, want the image's edge", name, ep)
		}
		env := s.Environment
		for k, want := range map[string]string{
			"SWITCHBOARD_NATS_URL":   "nats://nats:4222",
			"SWITCHBOARD_REDIS_URL":  "redis://redis:6379/0",
			"SWITCHBOARD_API_LISTEN": "0.0.0.0:9090",
			"SWITCHBOARD_LOG_FORMAT": "json",
		} {
			if v := env[k]; v == nil || *v != want {
				t.Errorf("%s: %s=%v, want %q", name, k, deref(v), want)
			}
		}
		// An API bound beyond loopback must be authenticated.
		if v := env["SWITCHBOARD_API_TOKENS"]; v == nil || *v == "" {
			t.Errorf("%s: API on 0.0.0.0 without SWITCHBOARD_API_TOKENS", name)
		}
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= 30*time.Second {
			t.Errorf("%s: stop_grace_period %v must exceed the 30s drain timeout", name, s.StopGracePeriod)
		}
	}

	router, _ := p.GetService("router")
	assertPort(t, router, "9090", 9090)
	assertGateway(t, router)
	if len(router.Entrypoint) == 0 || router.Entrypoint[0] != "/usr/local/bin/router" {
		t.Errorf("router entrypoint %v, want /usr/local/bin/router", router.Entrypoint)
	}

	for _, name := range []string{"redis", "nats", "prometheus"} {
		s, _ := p.GetService(name)
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 || s.HealthCheck.Disable {
			t.Errorf("%s has no health check", name)
		}
	}

	chat, _ := p.GetService("chat")
	if chat.Build == nil || chat.Build.Target != "examples" {
		t.Errorf("chat: build %+v, want the Dockerfile's examples target", chat.Build)
	}
	assertDependsHealthy(t, chat, "nats", "router")
	assertPort(t, chat, "8000", 8000)
	for k, want := range map[string]string{"SWITCHBOARD_NATS_URL": "nats://nats:4222", "SWITCHBOARD_API_URL": "http://router:9090"} {
		if v := chat.Environment[k]; v == nil || *v != want {
			t.Errorf("chat: %s=%v, want %q", k, deref(v), want)
		}
	}
	// The chat backend must present a token the gateway accepts.
	edge1, _ := p.GetService("edge1")
	if tok, accepted := chat.Environment["SWITCHBOARD_API_TOKEN"], edge1.Environment["SWITCHBOARD_API_TOKENS"]; tok == nil || accepted == nil || !slices.Contains(strings.Split(*accepted, ","), *tok) {
		t.Errorf("chat's API token %v is not among the gateway's %v", deref(tok), deref(accepted))
	}

	prom, _ := p.GetService("prometheus")
	var mounts []string
	for _, v := range prom.Volumes {
		mounts = append(mounts, v.Target)
	}
	for _, m := range []string{"/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml"} {
		if !slices.Contains(mounts, m) {
			t.Errorf("prometheus does not mount %s (mounts %v)", m, mounts)
		}
	}
}

// assertGateway: the edge/router container settings shared with the chart.
func assertGateway(t *testing.T, s types.ServiceConfig) {
	t.Helper()
	if s.Build == nil || s.Build.Target != "runtime" {
		t.Errorf("%s: build %+v, want the Dockerfile's runtime target", s.Name, s.Build)
	}
	hc := s.HealthCheck
	if hc == nil || hc.Disable || len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[1] != "/usr/local/bin/healthcheck" || !strings.HasSuffix(hc.Test[2], ":9091/readyz") {
		t.Errorf("%s: health check %+v, want the image's healthcheck on /readyz", s.Name, hc)
	}
	assertDependsHealthy(t, s, "redis", "nats")
	if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") {
		t.Errorf("%s: want read_only and cap_drop ALL, like the chart", s.Name)
	}
}

func assertDependsHealthy(t *testing.T, s types.ServiceConfig, deps ...string) {
	t.Helper()
	for _, d := range deps {
		dep, ok := s.DependsOn[d]
		if !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s: depends_on %s %+v, want condition service_healthy", s.Name, d, dep)
		}
	}
}

func assertPort(t *testing.T, s types.ServiceConfig, published string, target uint32) {
	t.Helper()
	for _, p := range s.Ports {
		if p.Published == published && p.Target == target {
			return
		}
	}
	t.Errorf("%s: ports %+v, want %s:%d", s.Name, s.Ports, published, target)
}

func deref(p *string) string {
	if p == nil {
		return "<unset>"
	}
	return *p
}
