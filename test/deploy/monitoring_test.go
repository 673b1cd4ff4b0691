package deploy_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

type grafanaPanel struct {
	ID      int            `json:"id"`
	Type    string         `json:"type"`
	Title   string         `json:"title"`
	GridPos map[string]int `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaDashboard struct {
	Title      string         `json:"title"`
	UID        string         `json:"uid"`
	Schema     int            `json:"schemaVersion"`
	Panels     []grafanaPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(readFile(t, "deploy/grafana/switchboard.json")))
	var d grafanaDashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("deploy/grafana/switchboard.json is not valid JSON: %v", err)
	}
	return d
}

func TestDashboardQueriesOnlyExportedMetrics(t *testing.T) {
	known := exportedMetrics(t)
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" || d.Schema == 0 {
		t.Fatalf("dashboard needs title, uid and schemaVersion: %q %q %d", d.Title, d.UID, d.Schema)
	}
	var panels []grafanaPanel
	for _, p := range d.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...) // collapsed rows nest panels
	}
	ids := map[int]string{}
	queried := map[string]bool{}
	graphs := 0
	for _, p := range panels {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		graphs++
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.GridPos["w"] == 0 || p.GridPos["h"] == 0 {
			t.Errorf("panel %q has no size", p.Title)
		}
		for _, tg := range p.Targets {
			names := queriedMetrics(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q query %s names no switchboard/go/process metric: %s", p.Title, tg.RefID, tg.Expr)
			}
			for _, n := range names {
				queried[n] = true
				if !metricExists(known, n) {
					t.Errorf("panel %q queries %s, which no code exports", p.Title, n)
				}
			}
		}
	}
	if graphs < 20 {
		t.Errorf("dashboard has %d panels; it is meant to cover the whole gateway", graphs)
	}
	// What an operator must see at a glance (the list).
	for _, must := range []string{
		"switchboard_connections", "switchboard_connect_decisions_total",
		"switchboard_handshake_duration_seconds_bucket", "switchboard_connect_duration_seconds_bucket",
		"switchboard_connections_closed_total", "switchboard_messages_received_total",
		"switchboard_received_bytes_total", "switchboard_sent_bytes_total",
		"switchboard_api_requests_total", "switchboard_api_request_duration_seconds_bucket",
		"switchboard_registry_operation_duration_seconds_bucket", "switchboard_registry_errors_total",
		"switchboard_lease_renewals_total", "switchboard_events_dropped_total",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !queried[must] {
			t.Errorf("dashboard does not show %s", must)
		}
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	if !slices.Contains(vars, "datasource") || !slices.Contains(vars, "instance") {
		t.Errorf("dashboard variables %v: want datasource and instance", vars)
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestAlertRulesQueryOnlyExportedMetrics(t *testing.T) {
	known := exportedMetrics(t)
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, "deploy/prometheus/alerts.yml")))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("deploy/prometheus/alerts.yml: %v", err)
	}
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: needs a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("group %s: rule without alert name or expr: %+v", g.Name, r)
				continue
			}
			if alerts[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: needs summary and description annotations", r.Alert)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") || strings.Count(r.Expr, "{") != strings.Count(r.Expr, "}") {
				t.Errorf("alert %s: unbalanced brackets in %s", r.Alert, r.Expr)
			}
			for _, n := range queriedMetrics(r.Expr) {
				if !metricExists(known, n) {
					t.Errorf("alert %s queries %s, which no code exports", r.Alert, n)
				}
			}
		}
	}
	// The list of conditions to alert on, and docs/operations.md's runbook.
	ops := string(readFile(t, "docs/operations.md"))
	for _, must := range []string{
		"SwitchboardTargetDown", "SwitchboardNodeFenced", "SwitchboardConnectionDrop",
		"SwitchboardSlowConsumers", "SwitchboardEventsDropped", "SwitchboardRegistryErrors",
		"SwitchboardAPIErrors", "SwitchboardLeaseRenewalFailures", "SwitchboardHandshakeLatencyHigh",
	} {
		if !alerts[must] {
			t.Errorf("alert %s missing", must)
		}
	}
	for a := range alerts {
		if !strings.Contains(ops, a) {
			t.Errorf("docs/operations.md does not say what to do for %s", a)
		}
	}
}

func TestChartShipsTheSameDashboardAndRules(t *testing.T) {
	for src, copyPath := range map[string]string{
		"deploy/prometheus/alerts.yml":    "helm/switchboard/files/alerts.yml",
		"deploy/grafana/switchboard.json": "helm/switchboard/files/switchboard-dashboard.json",
	} {
		if !bytes.Equal(readFile(t, src), readFile(t, copyPath)) {
			t.Errorf("%s differs from %s: copy it over (cp %s %s)", copyPath, src, src, copyPath)
		}
	}
}

func TestComposePrometheusScrapesEveryNode(t *testing.T) {
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(readFile(t, "deploy/prometheus.yml"), &cfg); err != nil {
		t.Fatalf("deploy/prometheus.yml: %v", err)
	}
	var targets []string
	for _, sc := range cfg.ScrapeConfigs {
		if !strings.Contains(sc.JobName, "switchboard") {
			t.Errorf("job %q: the TargetDown alert selects jobs matching .*switchboard.*", sc.JobName)
		}
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	slices.Sort(targets)
	want := []string{"edge1:9091", "edge2:9091", "edge3:9091", "router:9091"}
	if !slices.Equal(targets, want) {
		t.Errorf("scrape targets %v, want %v", targets, want)
	}
	if !slices.Contains(cfg.RuleFiles, "/etc/prometheus/alerts.yml") {
		t.Errorf("rule_files %v: the alert rules are not loaded", cfg.RuleFiles)
	}
}
