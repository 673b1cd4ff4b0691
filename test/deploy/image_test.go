package deploy_test

import (
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

// makeDryRun prints the commands `make TARGET VARS…` would run, without
// running them (there may be no container engine here).
func makeDryRun(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-s", "-n"}, args...)...)
	cmd.Dir = root(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// chartImage is what the chart pulls by default: image.repository and the
// appVersion.
func chartImage(t *testing.T) (repository, appVersion string) {
	t.Helper()
	var values struct {
		Image struct {
			Repository string `yaml:"repository"`
			Tag        string `yaml:"tag"`
		} `yaml:"image"`
	}
	if err := yaml.Unmarshal(readFile(t, "helm/switchboard/values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	var chart struct {
		AppVersion string `yaml:"appVersion"`
	}
	if err := yaml.Unmarshal(readFile(t, "helm/switchboard/Chart.yaml"), &chart); err != nil {
		t.Fatal(err)
	}
	if values.Image.Tag != "" {
		t.Fatalf("values.yaml image.tag %q: the default tag is the appVersion, keep it empty", values.Image.Tag)
	}
	return values.Image.Repository, chart.AppVersion
}

// `make image` builds the Dockerfile's runtime stage as the image the chart
// pulls by default, or as IMAGE:TAG, and pushes it with PUSH=1.
func TestMakeImageBuildsWhatTheChartPulls(t *testing.T) {
	repo, version := chartImage(t)
	out := makeDryRun(t, "image", "ENGINE=docker")
	want := "docker build --target runtime -t " + repo + ":" + version + " ."
	if !strings.Contains(out, want) {
		t.Errorf("make image runs:\n%s\nwant %q", out, want)
	}
	if strings.Contains(out, " push ") {
		t.Errorf("make image pushes without PUSH=1:\n%s", out)
	}
	out = makeDryRun(t, "image", "ENGINE=podman", "IMAGE=registry.example.com/me/switchboard", "TAG=dev-1", "PUSH=1")
	for _, want := range []string{
		"podman build --target runtime -t registry.example.com/me/switchboard:dev-1 .",
		"podman push registry.example.com/me/switchboard:dev-1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("make image IMAGE=… TAG=… PUSH=1 runs:\n%s\nwant %q", out, want)
		}
	}
	// The target it builds exists and is the gateway image.
	var names []string
	for _, s := range loadDockerfile(t) {
		names = append(names, s.Name)
	}
	if !slices.Contains(names, "runtime") {
		t.Errorf("make image builds --target runtime; the Dockerfile's stages are %v", names)
	}
}

var sha = "sha256:" + strings.Repeat("ab", 32)

// image.repository, image.tag and image.digest are what both Deployments run.
func TestChartImageValues(t *testing.T) {
	repo, version := chartImage(t)
	cases := []struct {
		args []string
		want string
	}{
		{nil, repo + ":" + version},
		{[]string{"--set", "image.repository=registry.example.com/me/switchboard", "--set", "image.tag=dev-1"}, "registry.example.com/me/switchboard:dev-1"},
		{[]string{"--set", "image.repository=registry.example.com/me/switchboard", "--set", "image.tag=dev-1", "--set", "image.digest=" + sha}, "registry.example.com/me/switchboard@" + sha},
	}
	for _, c := range cases {
		out, err := render(t, append(slices.Clone(required), c.args...)...)
		if err != nil {
			t.Fatalf("helm template %v: %v", c.args, err)
		}
		objs := decodeManifests(t, out)
		for _, name := range []string{"sb-switchboard-edge", "sb-switchboard-router"} {
			if got := str(dig(container(mustFind(t, objs, "Deployment", name)), "image")); got != c.want {
				t.Errorf("%v: %s runs %q, want %q", c.args, name, got, c.want)
			}
		}
	}
	if _, err := render(t, append(slices.Clone(required), "--set", "image.digest=latest")...); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("image.digest=latest: %v, want a schema refusal", err)
	}
}

// The docs say how to get an image, since none is published.
func TestDocsSayHowToBuildTheImage(t *testing.T) {
	push := regexp.MustCompile(`make image image=\S+ .*push=1`)
	for _, doc := range []string{"docs/operations.md", "helm/switchboard/README.md"} {
		text := strings.ToLower(string(readFile(t, doc)))
		if !strings.Contains(text, "no image is published") || !push.MatchString(text) || !strings.Contains(text, "image.repository") {
			t.Errorf("%s does not say that no image is published and how to build, push and use your own (make image IMAGE=… PUSH=1, image.repository)", doc)
		}
	}
}
