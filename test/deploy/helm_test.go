package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	"helm.sh/helm/v3/pkg/strvals"
	sigsyaml "sigs.k8s.io/yaml"
)

// kubeVersion is the Kubernetes version whose schemas the rendered
// manifests are validated against: the newest kubectl-validate v0.0.4 carries.
const kubeVersion = "1.30"

// required is the documented minimal install: external Redis and NATS.
var required = []string{"--set", "redis.url=redis://redis.example:6379/0", "--set", "nats.url=nats://nats.example:4222"}

// chartVariants are rendered, linted and validated; together they switch
// on every template and every branch an operator is likely to take.
var chartVariants = map[string][]string{
	"defaults": required,
	"everything-on": append(slices.Clone(required),
		"--set", "metrics.serviceMonitor.enabled=true",
		"--set", "metrics.prometheusRule.enabled=true",
		"--set", "metrics.dashboard.enabled=true",
		"--set", "edge.antiAffinity=hard",
		"--set", "edge.autoscaling.targetConnectionsPerPod=50000",
		"--set", "edge.service.type=LoadBalancer",
		"--set", "edge.service.externalTrafficPolicy=Local",
		"--set", "apiAuth.tokens={alpha,beta}",
		"--set", "networkPolicy.apiAllowedNamespaces={backends,jobs}",
		"--set", "networkPolicy.metricsAllowedNamespaces={monitoring}",
		"--set", "edge.config.SWITCHBOARD_CONNECT_MODE=required",
		"--set", "pprof=true",
		"--set", "imagePullSecrets[0].name=regcred",
	),
	"minimal": {
		"--set", "redis.existingSecret=infra", "--set", "nats.existingSecret=infra",
		"--set", "apiAuth.insecure=true",
		"--set", "router.enabled=false",
		"--set", "edge.autoscaling.enabled=false", "--set", "edge.replicaCount=2",
		"--set", "edge.pdb.enabled=false", "--set", "networkPolicy.enabled=false",
		"--set", "serviceAccount.create=false",
	},
	"redis-cluster": {
		"--set", "redis.addrs={r-0.redis:6379,r-1.redis:6379,r-2.redis:6379}",
		"--set", `nats.url=nats://a:4222\,nats://b:4222`,
		"--set", "apiAuth.existingSecret=api-keys",
	},
	"dev": {"--set", "dev.enabled=true"},
	// Keys the chart sets itself, overridden: the user's value replaces the
	// chart's (a key rendered twice is rejected by strict YAML parsers).
	"overrides": append(slices.Clone(required),
		"--set", "edge.config.SWITCHBOARD_LOG_LEVEL=debug",
		"--set", "edge.config.SWITCHBOARD_PREFIX=tenant-a",
		"--set", "edge.config.SWITCHBOARD_CONNECT_MODE=required",
		"--set", "router.config.SWITCHBOARD_LOG_LEVEL=warn",
	),
}

func chartDir(t testing.TB) string { return filepath.Join(root(t), "helm", "switchboard") }

// values parses --set arguments the way the helm CLI does.
func values(t testing.TB, args []string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for i := 0; i < len(args); i++ {
		if args[i] != "--set" || i+1 == len(args) {
			t.Fatalf("chart arguments %v: only --set key=value pairs are supported", args)
		}
		i++
		if err := strvals.ParseInto(args[i], vals); err != nil {
			t.Fatalf("--set %s: %v", args[i], err)
		}
	}
	return vals
}

// renderOpts are the helm template options a test may change.
type renderOpts struct {
	// kubeVersion as given to --kube-version; empty: helm's default
	// capabilities, as a plain `helm template` has offline.
	kubeVersion string
	// apiVersions replaces the default API versions (an old cluster).
	apiVersions []string
}

// renderRelease does what `helm template sb ./helm/switchboard --namespace gateway
// [--kube-version V] --set …` does, through helm's library: a client-only,
// dry-run install with helm's default capabilities and no cluster.
func renderRelease(t testing.TB, o renderOpts, args ...string) (*release.Release, error) {
	t.Helper()
	chrt, err := loader.Load(chartDir(t))
	if err != nil {
		return nil, fmt.Errorf("load chart: %w", err)
	}
	cfg := &action.Configuration{Log: func(format string, v ...any) { t.Logf("helm: "+format, v...) }}
	install := action.NewInstall(cfg)
	install.DryRun, install.DryRunOption = true, "true"
	install.ClientOnly = true
	install.Replace = true // as helm template: no release name check
	install.ReleaseName = "sb"
	install.Namespace = "gateway"
	if o.kubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(o.kubeVersion)
		if err != nil {
			t.Fatalf("kube version %q: %v", o.kubeVersion, err)
		}
		install.KubeVersion = kv
	}
	if o.apiVersions != nil {
		// ClientOnly starts from the default capabilities; an old cluster
		// is one whose discovery lists only these API versions.
		caps := chartutil.DefaultCapabilities.Copy()
		caps.APIVersions = o.apiVersions
		if install.KubeVersion != nil {
			caps.KubeVersion = *install.KubeVersion
		}
		install.ClientOnly = false
		cfg.Capabilities = caps
		cfg.KubeClient = &kubefake.PrintingKubeClient{Out: io.Discard}
		cfg.Releases = storage.Init(driver.NewMemory())
	}
	return install.Run(chrt, values(t, args))
}

// manifestOf is what helm template prints: the manifests, then the hooks.
func manifestOf(rel *release.Release) string {
	var b strings.Builder
	b.WriteString(rel.Manifest)
	for _, h := range rel.Hooks {
		fmt.Fprintf(&b, "\n---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	return b.String()
}

// render is `helm template` of the chart with default capabilities.
func render(t testing.TB, args ...string) (string, error) {
	t.Helper()
	rel, err := renderRelease(t, renderOpts{}, args...)
	if err != nil {
		return "", err
	}
	return manifestOf(rel), nil
}

type object = map[string]any

// decodeManifests splits helm's output into its objects.
func decodeManifests(t testing.TB, manifests string) []object {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(manifests))
	var objs []object
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("rendered YAML does not parse: %v\n%s", err, manifests)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
}

// dig walks maps and slices: dig(o, "spec", "ports", 0, "name").
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func find(objs []object, kind, name string) object {
	for _, o := range objs {
		if o["kind"] == kind && dig(o, "metadata", "name") == name {
			return o
		}
	}
	return nil
}

func mustFind(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	o := find(objs, kind, name)
	if o == nil {
		var have []string
		for _, o := range objs {
			have = append(have, fmt.Sprintf("%v/%v", o["kind"], dig(o, "metadata", "name")))
		}
		t.Fatalf("no %s %s rendered; have %v", kind, name, have)
	}
	return o
}

// crdKinds have no built-in schema in kubectl-validate; they are checked in Go.
var crdKinds = map[string]bool{"ServiceMonitor": true, "PrometheusRule": true}

// kubeschemaBinary builds, once per test run, the kubeschema module's
// command: kubectl-validate's validator with its embedded schemas, in a
// module of its own (see kubeschema/kubeschema.go for why).
var kubeschemaBinary = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(binDir, "kubeschema")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/kubeschema")
	cmd.Dir = filepath.Join(repoRoot, "test", "deploy", "kubeschema")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build test/deploy/kubeschema: %w\n%s", err, out)
	}
	return bin, nil
})

// kubectlValidate validates each file (a YAML stream) against the
// Kubernetes schemas of kubeVersion (unknown fields, wrong types, missing
// required fields) and returns the verdicts per file, one per document:
// "" for a valid one, else the validator's error.
func kubectlValidate(t testing.TB, files map[string][]byte) map[string][]string {
	t.Helper()
	bin, err := kubeschemaBinary()
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]string{}
	for name, body := range files {
		in[name] = string(body)
	}
	req, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-version", kubeVersion)
	cmd.Stdin = bytes.NewReader(req)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubeschema: %v\n%s", err, stderr.String())
	}
	var verdicts map[string][]string
	if err := json.Unmarshal(stdout.Bytes(), &verdicts); err != nil {
		t.Fatalf("kubeschema output is not JSON: %v\n%s", err, stdout.String())
	}
	if len(verdicts) != len(files) {
		t.Fatalf("kubeschema judged %d of %d files:\n%s", len(verdicts), len(files), stdout.String())
	}
	return verdicts
}

// validationFailures returns, per file, why it is not valid.
func validationFailures(verdicts map[string][]string) map[string]string {
	bad := map[string]string{}
	for file, docs := range verdicts {
		if len(docs) == 0 {
			bad[file] = "no verdict: no document found"
		}
		for _, why := range docs {
			if why != "" {
				bad[file] = why
			}
		}
	}
	return bad
}

func TestKubectlValidateCatchesMistakes(t *testing.T) {
	// The validator itself must reject what a typo produces, or a green
	// chart test proves nothing.
	good := "apiVersion: v1\nkind: Service\nmetadata:\n  name: ok\nspec:\n  ports:\n    - port: 80\n"
	typo := "apiVersion: v1\nkind: Service\nmetadata:\n  name: typo\nspec:\n  prots:\n    - port: 80\n"
	wrongType := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: wrong\nspec:\n  replicas: three\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: c, image: i}]\n"
	results := kubectlValidate(t, map[string][]byte{"good.yaml": []byte(good), "typo.yaml": []byte(typo), "wrong.yaml": []byte(wrongType)})
	bad := validationFailures(results)
	if _, ok := bad["good.yaml"]; ok {
		t.Errorf("a valid Service was rejected: %s", bad["good.yaml"])
	}
	if _, ok := bad["typo.yaml"]; !ok {
		t.Errorf("a misspelled field (spec.prots) passed validation: %v", results)
	}
	if _, ok := bad["wrong.yaml"]; !ok {
		t.Errorf("replicas: three passed validation: %v", results)
	}
}

// TestChartLintsStrictly is `helm lint --strict` of every variant, with
// helm's default Kubernetes version and with kubeVersion.
func TestChartLintsStrictly(t *testing.T) {
	kv, err := chartutil.ParseKubeVersion(kubeVersion + ".0")
	if err != nil {
		t.Fatal(err)
	}
	for name, args := range chartVariants {
		for _, version := range []*chartutil.KubeVersion{nil, kv} {
			lint := action.NewLint()
			lint.Strict = true
			lint.Namespace = "gateway"
			lint.KubeVersion = version
			res := lint.Run([]string{chartDir(t)}, values(t, args))
			if len(res.Errors) > 0 || res.TotalChartsLinted != 1 {
				var msgs []string
				for _, m := range res.Messages {
					msgs = append(msgs, m.Error())
				}
				t.Errorf("helm lint --strict (%s, kube version %v): %v\n%s", name, version, res.Errors, strings.Join(msgs, "\n"))
			}
		}
	}
}

func TestChartRendersValidManifests(t *testing.T) {
	files := map[string][]byte{}
	rendered := map[string][]object{}
	for variant, args := range chartVariants {
		out, err := render(t, args...)
		if err != nil {
			t.Fatalf("helm template (%s): %v", variant, err)
		}
		objs := decodeManifests(t, out)
		rendered[variant] = objs
		for i, o := range objs {
			if crdKinds[str(o["kind"])] {
				continue
			}
			b, err := yaml.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			files[fmt.Sprintf("%s-%02d-%s-%s.yaml", variant, i, strings.ToLower(str(o["kind"])), str(dig(o, "metadata", "name")))] = b
		}
	}
	for file, why := range validationFailures(kubectlValidate(t, files)) {
		t.Errorf("%s is not a valid Kubernetes %s object: %s", file, kubeVersion, why)
	}

	// What each variant must contain.
	all := rendered["everything-on"]
	sm := mustFind(t, all, "ServiceMonitor", "sb-switchboard")
	if str(dig(sm, "spec", "endpoints", 0, "port")) != "admin" || str(dig(sm, "spec", "selector", "matchLabels", "app.kubernetes.io/component")) != "metrics" {
		t.Errorf("ServiceMonitor does not scrape the metrics Service's admin port: %v", sm["spec"])
	}
	rule := mustFind(t, all, "PrometheusRule", "sb-switchboard")
	if groups, _ := dig(rule, "spec", "groups").([]any); len(groups) == 0 || str(dig(rule, "spec", "groups", 0, "rules", 0, "alert")) == "" {
		t.Errorf("PrometheusRule carries no alert rules: %v", rule["spec"])
	}
	dash := mustFind(t, all, "ConfigMap", "sb-switchboard-dashboard")
	if !json.Valid([]byte(str(dig(dash, "data", "switchboard.json")))) {
		t.Error("dashboard ConfigMap does not hold valid JSON")
	}
	edge := mustFind(t, all, "Deployment", "sb-switchboard-edge")
	if dig(edge, "spec", "template", "spec", "affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution") == nil {
		t.Error("edge.antiAffinity=hard does not require anti-affinity")
	}
	hpa := mustFind(t, all, "HorizontalPodAutoscaler", "sb-switchboard-edge")
	if !strings.Contains(fmt.Sprint(dig(hpa, "spec", "metrics")), "switchboard_connections") {
		t.Error("targetConnectionsPerPod does not add a switchboard_connections Pods metric")
	}

	minimal := rendered["minimal"]
	for _, kind := range []string{"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"} {
		for _, o := range minimal {
			if o["kind"] == kind {
				t.Errorf("minimal variant still renders %s %v", kind, dig(o, "metadata", "name"))
			}
		}
	}
	if find(minimal, "Deployment", "sb-switchboard-router") != nil {
		t.Error("router.enabled=false still renders the router")
	}
	api := mustFind(t, minimal, "Service", "sb-switchboard-api")
	if str(dig(api, "spec", "selector", "app.kubernetes.io/component")) != "edge" {
		t.Error("without routers the API Service must select the edges")
	}
	medge := mustFind(t, minimal, "Deployment", "sb-switchboard-edge")
	if str(dig(medge, "spec", "replicas")) != "2" {
		t.Errorf("autoscaling off: replicas %v, want 2", dig(medge, "spec", "replicas"))
	}
	if ref := str(dig(envVar(medge, "SWITCHBOARD_REDIS_URL"), "valueFrom", "secretKeyRef", "name")); ref != "infra" {
		t.Errorf("redis.existingSecret: SWITCHBOARD_REDIS_URL from secret %q, want infra", ref)
	}

	dev := rendered["dev"]
	mustFind(t, dev, "Deployment", "sb-switchboard-redis")
	mustFind(t, dev, "Deployment", "sb-switchboard-nats")
	devSecret := mustFind(t, dev, "Secret", "sb-switchboard")
	if str(dig(devSecret, "stringData", "redis-url")) != "redis://sb-switchboard-redis:6379/0" {
		t.Errorf("dev.enabled: redis-url %v, want the in-release Redis", dig(devSecret, "stringData"))
	}

	over := rendered["overrides"]
	for cm, want := range map[string]map[string]string{
		"sb-switchboard-edge":   {"SWITCHBOARD_LOG_LEVEL": "debug", "SWITCHBOARD_PREFIX": "tenant-a", "SWITCHBOARD_CONNECT_MODE": "required", "SWITCHBOARD_LOG_FORMAT": "json"},
		"sb-switchboard-router": {"SWITCHBOARD_LOG_LEVEL": "warn", "SWITCHBOARD_PREFIX": "switchboard"},
	} {
		data := dig(mustFind(t, over, "ConfigMap", cm), "data")
		for k, v := range want {
			if got := str(dig(data, k)); got != v {
				t.Errorf("overrides: ConfigMap %s %s=%q, want %q", cm, k, got, v)
			}
		}
	}

	cluster := rendered["redis-cluster"]
	cm := mustFind(t, cluster, "ConfigMap", "sb-switchboard-edge")
	if str(dig(cm, "data", "SWITCHBOARD_REDIS_ADDRS")) != "r-0.redis:6379,r-1.redis:6379,r-2.redis:6379" {
		t.Errorf("redis.addrs not passed: %v", cm["data"])
	}
}

func container(d object) object {
	c, _ := dig(d, "spec", "template", "spec", "containers", 0).(object)
	return c
}

func envVar(d object, name string) any {
	env, _ := dig(container(d), "env").([]any)
	for _, e := range env {
		if dig(e, "name") == name {
			return e
		}
	}
	return nil
}

func seconds(t *testing.T, s string) int {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return int(d / time.Second)
}

func TestChartDefaultsAreProductionShaped(t *testing.T) {
	out, err := render(t, required...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	objs := decodeManifests(t, out)
	edge := mustFind(t, objs, "Deployment", "sb-switchboard-edge")
	router := mustFind(t, objs, "Deployment", "sb-switchboard-router")
	edgeCM := mustFind(t, objs, "ConfigMap", "sb-switchboard-edge")

	pod := dig(edge, "spec", "template", "spec")
	if dig(pod, "affinity", "podAntiAffinity") == nil {
		t.Error("edge pods have no pod anti-affinity")
	}
	// The kubelet's SIGKILL must come after the drain has finished.
	grace, _ := dig(pod, "terminationGracePeriodSeconds").(int)
	delay := seconds(t, str(dig(edgeCM, "data", "SWITCHBOARD_DRAIN_DELAY")))
	window := seconds(t, str(dig(edgeCM, "data", "SWITCHBOARD_DRAIN_WINDOW")))
	timeout := seconds(t, str(dig(edgeCM, "data", "SWITCHBOARD_DRAIN_TIMEOUT")))
	if delay <= 0 || delay+window >= timeout || timeout >= grace {
		t.Errorf("drain: delay %ds + window %ds < timeout %ds < grace %ds does not hold", delay, window, timeout, grace)
	}
	if str(dig(edge, "spec", "strategy", "rollingUpdate", "maxUnavailable")) != "0" {
		t.Error("edge rollouts may take capacity away: maxUnavailable != 0")
	}

	for _, d := range []object{edge, router} {
		name := str(dig(d, "metadata", "name"))
		ann, _ := dig(d, "spec", "template", "metadata", "annotations").(map[string]any)
		if len(str(ann["checksum/config"])) != 64 || len(str(ann["checksum/connections"])) != 64 {
			t.Errorf("%s: pods lack the config/connections checksum annotations: %v", name, ann)
		}
		c := container(d)
		for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
			if str(dig(c, probe, "httpGet", "path")) != path || str(dig(c, probe, "httpGet", "port")) != "admin" {
				t.Errorf("%s: %s %v, want %s on the admin port", name, probe, dig(c, probe), path)
			}
		}
		ps := dig(d, "spec", "template", "spec", "securityContext")
		if dig(ps, "runAsNonRoot") != true || str(dig(ps, "runAsUser")) == "0" {
			t.Errorf("%s: pod securityContext %v is not non-root", name, ps)
		}
		cs := dig(c, "securityContext")
		if dig(cs, "readOnlyRootFilesystem") != true || dig(cs, "allowPrivilegeEscalation") != false || str(dig(cs, "capabilities", "drop", 0)) != "ALL" {
			t.Errorf("%s: container securityContext %v", name, cs)
		}
		if dig(c, "resources", "requests") == nil {
			t.Errorf("%s: no resource requests", name)
		}
		if envVar(d, "SWITCHBOARD_NATS_URL") == nil || envVar(d, "SWITCHBOARD_REDIS_URL") == nil {
			t.Errorf("%s: NATS/Redis URLs not passed from the Secret", name)
		}
		// The tokens file the config names is the one the Secret is mounted as.
		cmName := str(dig(c, "envFrom", 0, "configMapRef", "name"))
		tokensFile := str(dig(mustFind(t, objs, "ConfigMap", cmName), "data", "SWITCHBOARD_API_TOKENS_FILE"))
		mountDir := ""
		mounts, _ := dig(c, "volumeMounts").([]any)
		for _, m := range mounts {
			if dig(m, "name") == "api-tokens" {
				mountDir = str(dig(m, "mountPath"))
			}
		}
		if tokensFile == "" || mountDir == "" || filepath.Dir(tokensFile) != mountDir {
			t.Errorf("%s: SWITCHBOARD_API_TOKENS_FILE %q is not inside the tokens mount %q", name, tokensFile, mountDir)
		}
	}

	tokens := mustFind(t, objs, "Secret", "sb-switchboard-api-tokens")
	if len(str(dig(tokens, "data", "tokens"))) < 20 {
		t.Error("no API token generated by default: the API would be open or unusable")
	}
	if str(dig(mustFind(t, objs, "Service", "sb-switchboard-metrics"), "spec", "clusterIP")) != "None" {
		t.Error("metrics Service is not headless")
	}
	mustFind(t, objs, "HorizontalPodAutoscaler", "sb-switchboard-edge")
	mustFind(t, objs, "HorizontalPodAutoscaler", "sb-switchboard-router")
	mustFind(t, objs, "PodDisruptionBudget", "sb-switchboard-edge")
	if replicas := dig(edge, "spec", "replicas"); replicas != nil {
		t.Errorf("edge Deployment sets replicas %v while its HPA owns them", replicas)
	}

	// The API is reachable only from the release's namespace by default.
	for _, np := range []string{"sb-switchboard-edge", "sb-switchboard-router"} {
		pol := mustFind(t, objs, "NetworkPolicy", np)
		found := false
		rules, _ := dig(pol, "spec", "ingress").([]any)
		for _, r := range rules {
			if str(dig(r, "ports", 0, "port")) != "api" {
				continue
			}
			found = true
			from, _ := dig(r, "from").([]any)
			if len(from) != 1 || dig(from[0], "podSelector") == nil || dig(from[0], "namespaceSelector") != nil {
				t.Errorf("%s: API open to %v, want only this namespace's pods", np, from)
			}
		}
		if !found {
			t.Errorf("%s has no rule for the API port", np)
		}
	}

	// Service selectors select the pods they are meant to.
	for svc, dep := range map[string]object{"sb-switchboard-edge": edge, "sb-switchboard-api": router} {
		sel, _ := dig(mustFind(t, objs, "Service", svc), "spec", "selector").(map[string]any)
		labels, _ := dig(dep, "spec", "template", "metadata", "labels").(map[string]any)
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("Service %s selects %s=%v; pods have %v", svc, k, v, labels[k])
			}
		}
	}
}

func TestChartNetworkPolicyAllowsConfiguredNamespaces(t *testing.T) {
	out, err := render(t, append(slices.Clone(required), "--set", "networkPolicy.apiAllowedNamespaces={backends}")...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	pol := mustFind(t, decodeManifests(t, out), "NetworkPolicy", "sb-switchboard-router")
	if !strings.Contains(fmt.Sprint(dig(pol, "spec", "ingress")), "kubernetes.io/metadata.name:backends") {
		t.Errorf("namespace backends not allowed to reach the API: %v", dig(pol, "spec", "ingress"))
	}
}

func TestChartRollsPodsWhenConfigChanges(t *testing.T) {
	checksum := func(args ...string) string {
		out, err := render(t, append(slices.Clone(required), args...)...)
		if err != nil {
			t.Fatalf("helm template: %v", err)
		}
		d := mustFind(t, decodeManifests(t, out), "Deployment", "sb-switchboard-edge")
		return str(dig(d, "spec", "template", "metadata", "annotations", "checksum/config"))
	}
	before := checksum()
	if before != checksum() {
		t.Fatal("checksum/config differs between two identical renders: every upgrade would restart every pod")
	}
	if before == checksum("--set", "edge.config.SWITCHBOARD_CONNECT_MODE=required") {
		t.Error("changing edge.config does not change checksum/config: pods would keep the old settings")
	}
}

func TestChartRefusesBadValues(t *testing.T) {
	cases := map[string]struct {
		args []string
		want string
	}{
		"no redis":             {[]string{"--set", "nats.url=nats://n:4222"}, "redis.url"},
		"no nats":              {[]string{"--set", "redis.url=redis://r:6379"}, "nats.url"},
		"grace shorter":        {append(slices.Clone(required), "--set", "edge.terminationGracePeriodSeconds=20"), "terminationGracePeriodSeconds"},
		"drain window too big": {append(slices.Clone(required), "--set", "edge.drain.windowSeconds=40"), "timeoutSeconds"},
		"misspelled key":       {append(slices.Clone(required), "--set", "edge.replicas=3"), "replicas"},
		"bad enum":             {append(slices.Clone(required), "--set", "edge.antiAffinity=sometimes"), "antiAffinity"},
		"bad redis url":        {[]string{"--set", "redis.url=localhost:6379", "--set", "nats.url=nats://n:4222"}, "/redis/url"},
		"bad config key":       {append(slices.Clone(required), "--set", "edge.config.MAX_FRAME=1"), "MAX_FRAME"},
	}
	for name, c := range cases {
		_, err := render(t, c.args...)
		if err == nil {
			t.Errorf("%s: helm template succeeded, want a refusal", name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error does not mention %q: %v", name, c.want, err)
		}
	}
}

// strictDocuments parses every document of a rendered manifest with a
// strict YAML decoder (sigs.k8s.io/yaml, as kubectl does): a key twice in
// one mapping is an error, where a lenient parser keeps the last value.
func strictDocuments(manifest string) error {
	for name, doc := range releaseutil.SplitManifests(manifest) {
		var obj map[string]any
		if err := sigsyaml.UnmarshalStrict([]byte(doc), &obj); err != nil {
			return fmt.Errorf("%s (%s): %w\n%s", name, firstLine(doc), err, doc)
		}
	}
	return nil
}

func firstLine(doc string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(doc), "\n")
	return line
}

func TestStrictYAMLRejectsDuplicateKeys(t *testing.T) {
	if err := strictDocuments("apiVersion: v1\nkind: ConfigMap\ndata:\n  A: \"1\"\n  A: \"2\"\n"); err == nil {
		t.Fatal("a mapping with key A twice parsed: the strict check proves nothing")
	}
	if err := strictDocuments("apiVersion: v1\nkind: ConfigMap\ndata:\n  A: \"1\"\n---\napiVersion: v1\nkind: ConfigMap\n"); err != nil {
		t.Fatalf("valid documents rejected: %v", err)
	}
}

// Every manifest of every variant parses with a strict YAML decoder.
func TestChartManifestsParseStrictly(t *testing.T) {
	for variant, args := range chartVariants {
		out, err := render(t, args...)
		if err != nil {
			t.Fatalf("helm template (%s): %v", variant, err)
		}
		if err := strictDocuments(out); err != nil {
			t.Errorf("%s: %v", variant, err)
		}
	}
}

// A plain `helm template ./helm/switchboard` (no --kube-version, no
// cluster) renders: helm's default capabilities are those of Kubernetes
// v1.20 with every API its libraries know. The chart also renders for each
// version it is meant for, and refuses, saying why, a cluster that lacks
// the APIs it uses.
func TestChartRendersOfflineWithHelmDefaults(t *testing.T) {
	rel, err := renderRelease(t, renderOpts{}, required...)
	if err != nil {
		t.Fatalf("helm template with default capabilities (Kubernetes %s): %v", chartutil.DefaultCapabilities.KubeVersion.Version, err)
	}
	if !strings.Contains(rel.Manifest, "kind: Deployment") {
		t.Fatalf("nothing rendered:\n%s", rel.Manifest)
	}
	for _, v := range []string{"1.25.0", "1.28.3", kubeVersion + ".0", "1.37.0"} {
		if _, err := renderRelease(t, renderOpts{kubeVersion: v}, required...); err != nil {
			t.Errorf("--kube-version %s: %v", v, err)
		}
	}
	old := []string{"v1", "apps/v1", "autoscaling/v1", "policy/v1beta1", "networking.k8s.io/v1"}
	_, err = renderRelease(t, renderOpts{kubeVersion: "1.20.0", apiVersions: old}, required...)
	if err == nil || !strings.Contains(err.Error(), "autoscaling/v2") || !strings.Contains(err.Error(), "Kubernetes 1.25") {
		t.Errorf("a cluster without autoscaling/v2: %v, want a refusal naming the API and the Kubernetes version", err)
	}
}

// helm template never prints NOTES.txt; the library's release carries it.
func TestChartNotesTellHowToConnect(t *testing.T) {
	notes := func(args ...string) string {
		t.Helper()
		rel, err := renderRelease(t, renderOpts{}, args...)
		if err != nil {
			t.Fatalf("rendering NOTES.txt: %v", err)
		}
		return rel.Info.Notes
	}
	got := notes(required...)
	for _, want := range []string{
		"port-forward svc/sb-switchboard-edge",
		"http://sb-switchboard-api.gateway.svc:9090/@connections/",
		"get secret sb-switchboard-api-tokens",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(got, "no image is published") || !strings.Contains(got, "make image") {
		t.Errorf("NOTES.txt does not warn that the default image is not published:\n%s", got)
	}
	if got := notes(append(slices.Clone(required), "--set", "image.repository=registry.example.com/me/switchboard")...); strings.Contains(got, "no image is published") {
		t.Errorf("NOTES.txt warns about the default image while image.repository is set:\n%s", got)
	}
	if got := notes("--set", "dev.enabled=true", "--set", "apiAuth.insecure=true"); !strings.Contains(got, "WARNING: dev.enabled") || !strings.Contains(got, "WARNING: apiAuth.insecure") {
		t.Errorf("NOTES.txt does not warn about dev mode and an open API:\n%s", got)
	}
}
