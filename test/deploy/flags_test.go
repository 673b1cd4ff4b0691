package deploy_test

import (
	"slices"
	"sort"
	"strings"
	"testing"
)

// The binaries ignore environment variables that are not flags, so a
// misspelled or renamed SWITCHBOARD_* setting would silently do nothing.
// Every one that compose and the chart set must be a flag of the binary
// that receives it.
func TestConfiguredVariablesAreRealFlags(t *testing.T) {
	known := map[string]map[string]bool{
		"/usr/local/bin/edge":   flagEnv(t, "edge"),
		"/usr/local/bin/router": flagEnv(t, "router"),
	}

	p := loadCompose(t)
	for _, s := range p.Services {
		if s.Build == nil || s.Build.Target != "runtime" {
			continue
		}
		bin := "/usr/local/bin/edge"
		if len(s.Entrypoint) > 0 {
			bin = s.Entrypoint[0]
		}
		vars, ok := known[bin]
		if !ok {
			t.Errorf("compose %s runs %s, not a binary of the image", s.Name, bin)
			continue
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "SWITCHBOARD_") && !vars[k] {
				t.Errorf("compose %s sets %s, which %s does not read", s.Name, k, bin)
			}
		}
	}

	for _, variant := range []string{"defaults", "everything-on", "redis-cluster", "minimal", "overrides"} {
		out, err := render(t, chartVariants[variant]...)
		if err != nil {
			t.Fatalf("helm template (%s): %v", variant, err)
		}
		objs := decodeManifests(t, out)
		checked := 0
		for _, d := range objs {
			if d["kind"] != "Deployment" {
				continue
			}
			c := container(d)
			cmd, _ := dig(c, "command").([]any)
			if len(cmd) == 0 {
				continue // dev Redis/NATS
			}
			vars, ok := known[str(cmd[0])]
			if !ok {
				t.Errorf("%s: Deployment %v runs %v, not a binary of the image", variant, dig(d, "metadata", "name"), cmd)
				continue
			}
			checked++
			var names []string
			env, _ := dig(c, "env").([]any)
			for _, e := range env {
				names = append(names, str(dig(e, "name")))
			}
			from, _ := dig(c, "envFrom").([]any)
			for _, f := range from {
				cm := mustFind(t, objs, "ConfigMap", str(dig(f, "configMapRef", "name")))
				data, _ := cm["data"].(map[string]any)
				for k := range data {
					names = append(names, k)
				}
			}
			sort.Strings(names)
			for _, n := range names {
				if strings.HasPrefix(n, "SWITCHBOARD_") && !vars[n] {
					t.Errorf("%s: Deployment %v sets %s, which %v does not read", variant, dig(d, "metadata", "name"), n, cmd[0])
				}
			}
			if !slices.Contains(names, "SWITCHBOARD_NATS_URL") {
				t.Errorf("%s: Deployment %v gets no NATS URL", variant, dig(d, "metadata", "name"))
			}
		}
		if checked == 0 {
			t.Errorf("%s: no edge or router Deployment checked", variant)
		}
	}
}
