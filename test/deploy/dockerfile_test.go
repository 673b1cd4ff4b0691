package deploy_test

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	Cmd  string // upper case: FROM, RUN, ...
	Args string
	Line int
}

type stage struct {
	Base  string
	Name  string
	Insts []instruction
}

// parseDockerfile is just enough of the Dockerfile grammar for these checks:
// comments, backslash continuations (with comment lines inside them) and
// FROM … AS name splitting stages.
func parseDockerfile(src string) ([]stage, error) {
	var (
		stages []stage
		cur    *instruction
		buf    strings.Builder
	)
	flush := func() {
		if cur == nil {
			return
		}
		cur.Args = strings.Join(strings.Fields(buf.String()), " ")
		if cur.Cmd == "FROM" {
			f := strings.Fields(cur.Args)
			s := stage{}
			for i := 0; i < len(f); i++ {
				if strings.HasPrefix(f[i], "--") {
					continue
				}
				if s.Base == "" {
					s.Base = f[i]
				} else if strings.EqualFold(f[i], "AS") && i+1 < len(f) {
					s.Name = f[i+1]
					break
				}
			}
			stages = append(stages, s)
		} else if len(stages) > 0 {
			stages[len(stages)-1].Insts = append(stages[len(stages)-1].Insts, *cur)
		}
		cur = nil
		buf.Reset()
	}
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == nil) {
			continue
		}
		cont := strings.HasSuffix(trimmed, `\`)
		trimmed = strings.TrimSuffix(trimmed, `\`)
		if cur == nil {
			cmd, rest, _ := strings.Cut(trimmed, " ")
			cur = &instruction{Cmd: strings.ToUpper(cmd), Line: i + 1}
			trimmed = rest
		}
		buf.WriteString(trimmed)
		buf.WriteByte(' ')
		if !cont {
			flush()
		}
	}
	flush()
	return stages, nil
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.Insts {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func (s stage) last(cmd string) (instruction, bool) {
	all := s.all(cmd)
	if len(all) == 0 {
		return instruction{}, false
	}
	return all[len(all)-1], true
}

func loadDockerfile(t *testing.T) []stage {
	t.Helper()
	stages, err := parseDockerfile(string(readFile(t, "Dockerfile")))
	if err != nil {
		t.Fatal(err)
	}
	return stages
}

func stageNamed(t *testing.T, stages []stage, name string) stage {
	t.Helper()
	for _, s := range stages {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("Dockerfile has no stage %q", name)
	return stage{}
}

var buildPkgRE = regexp.MustCompile(`\./[a-z0-9_/]+`)

// builtPackages returns the ./... packages a stage's `go build` RUNs name.
func builtPackages(s stage) []string {
	var pkgs []string
	for _, in := range s.all("RUN") {
		if strings.Contains(in.Args, "go build") {
			_, after, _ := strings.Cut(in.Args, "go build")
			pkgs = append(pkgs, buildPkgRE.FindAllString(after, -1)...)
		}
	}
	return pkgs
}

func TestDockerfileParser(t *testing.T) {
	stages, _ := parseDockerfile("# c\nFROM a:1 AS one\nRUN x \\\n  # inner comment\n  y\nFROM --platform=$X b AS two\nUSER 1:1\n")
	if len(stages) != 2 || stages[0].Name != "one" || stages[1].Base != "b" || stages[1].Name != "two" {
		t.Fatalf("stages = %+v", stages)
	}
	if run, _ := stages[0].last("RUN"); run.Args != "x y" {
		t.Fatalf("continuation: RUN args %q, want %q", run.Args, "x y")
	}
}

func TestDockerfileBuildsStaticNonRootImage(t *testing.T) {
	stages := loadDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a multi-stage build", len(stages))
	}
	build := stageNamed(t, stages, "build")
	if !strings.HasPrefix(build.Base, "golang:") {
		t.Errorf("build stage base %q, want a golang image", build.Base)
	}
	runs := build.all("RUN")
	var goBuild string
	for _, r := range runs {
		if strings.Contains(r.Args, "go build") {
			goBuild = r.Args
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`, "--mount=type=cache,target=/go/pkg/mod", "--mount=type=cache,target=/root/.cache/go-build"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("go build RUN lacks %s: %s", want, goBuild)
		}
	}
	pkgs := builtPackages(build)
	for _, want := range []string{"./cmd/edge", "./cmd/router", "./deploy/healthcheck"} {
		if !slices.Contains(pkgs, want) {
			t.Errorf("build stage does not build %s (builds %v)", want, pkgs)
		}
	}

	for _, p := range append(pkgs, builtPackages(stageNamed(t, stages, "build-examples"))...) {
		if _, err := os.Stat(filepath.Join(root(t), p, "main.go")); err != nil {
			t.Errorf("Dockerfile builds %s, which has no main.go: %v", p, err)
		}
	}

	// `docker build .` builds the last stage: it must be the gateway image.
	final := stages[len(stages)-1]
	if final.Name != "runtime" {
		t.Errorf("last stage is %q, want runtime (the default target)", final.Name)
	}
	for _, s := range stages {
		if s.Name != "runtime" && s.Name != "examples" {
			continue
		}
		if !strings.HasPrefix(s.Base, "gcr.io/distroless/static") && s.Base != "scratch" {
			t.Errorf("stage %s base %q, want distroless static or scratch", s.Name, s.Base)
		}
		user, ok := s.last("USER")
		if !ok {
			t.Errorf("stage %s has no USER: it would run as root", s.Name)
			continue
		}
		uid, _, _ := strings.Cut(user.Args, ":")
		// Numeric, or Kubernetes' runAsNonRoot cannot verify it.
		if uid == "0" || uid == "root" || strings.Trim(uid, "0123456789") != "" {
			t.Errorf("stage %s USER %q, want a numeric non-root uid", s.Name, user.Args)
		}
	}
	ep, ok := final.last("ENTRYPOINT")
	var argv []string
	if !ok || json.Unmarshal([]byte(ep.Args), &argv) != nil || len(argv) == 0 || argv[0] != "/usr/local/bin/edge" {
		t.Errorf("runtime ENTRYPOINT %q, want exec form [\"/usr/local/bin/edge\"]", ep.Args)
	}
	var exposed []string
	for _, e := range final.all("EXPOSE") {
		exposed = append(exposed, strings.Fields(e.Args)...)
	}
	for _, p := range []string{"8080", "9090", "9091"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("runtime does not EXPOSE %s (exposes %v)", p, exposed)
		}
	}
	var copied string
	for _, c := range final.all("COPY") {
		copied += c.Args + "\n"
	}
	for _, bin := range []string{"/out/edge", "/out/router", "/out/healthcheck"} {
		if !strings.Contains(copied, bin) || !strings.Contains(copied, "/usr/local/bin/") {
			t.Errorf("runtime does not copy %s into /usr/local/bin/: %s", bin, copied)
		}
	}
}

// TestDockerignoreKeepsTheBuildContext: nothing `go build` needs is excluded.
func TestDockerignoreKeepsTheBuildContext(t *testing.T) {
	var patterns []string
	for _, l := range strings.Split(string(readFile(t, ".dockerignore")), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	if !slices.Contains(patterns, ".git") {
		t.Error(".dockerignore should exclude .git")
	}
	needed := []string{"go.mod", "go.sum", "cmd/edge/main.go", "internal/conn/conn.go", "deploy/healthcheck/main.go", "pkg"}
	for _, p := range patterns {
		for _, n := range needed {
			pp := strings.TrimPrefix(p, "**/")
			if m, _ := filepath.Match(pp, n); m || strings.HasPrefix(n, strings.TrimSuffix(pp, "/")+"/") {
				t.Errorf(".dockerignore pattern %q excludes %s, which the build needs", p, n)
			}
		}
	}
}

// imageBinaries builds, once per test run, what the Dockerfile's build
// stage builds, with its flags; it returns the directory of the binaries.
var imageBinaries = sync.OnceValues(func() (string, error) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		return "", err
	}
	stages, err := parseDockerfile(string(src))
	if err != nil {
		return "", err
	}
	var pkgs []string
	for _, s := range stages {
		if s.Name == "build" {
			pkgs = builtPackages(s)
		}
	}
	if len(pkgs) == 0 {
		return "", errors.New("no packages found in the Dockerfile's go build")
	}
	args := append([]string{"build", "-trimpath", "-ldflags", "-s -w", "-o", binDir + string(os.PathSeparator)}, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-trimpath")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return binDir, nil
})

// TestImageBinariesAreStatic checks the ELF files the image gets: no
// interpreter and no dynamic section, so they run on distroless/static or
// scratch; no symbol table (-s); no local paths (-trimpath).
func TestImageBinariesAreStatic(t *testing.T) {
	dir, err := imageBinaries()
	if err != nil {
		t.Fatal(err)
	}
	pkgs := builtPackages(stageNamed(t, loadDockerfile(t), "build"))
	for _, p := range pkgs {
		bin := filepath.Join(dir, filepath.Base(p))
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
				t.Errorf("%s has a %v program header: not a static binary", p, prog.Type)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s links %v", p, libs)
		}
		if f.Section(".symtab") != nil {
			t.Errorf("%s keeps its symbol table: -ldflags -s missing", p)
		}
		f.Close()
		raw, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte(repoRoot+"/")) {
			t.Errorf("%s contains the build directory %s: -trimpath missing", p, repoRoot)
		}
	}
}

var envFlagRE = regexp.MustCompile(`\((SWITCHBOARD_[A-Z0-9_]+), default`)

// flagEnv returns the SWITCHBOARD_* variables a binary of the image reads,
// from its --help.
func flagEnv(t *testing.T, name string) map[string]bool {
	t.Helper()
	dir, err := imageBinaries()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(dir, name), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", name, err, out)
	}
	vars := map[string]bool{}
	for _, m := range envFlagRE.FindAllStringSubmatch(string(out), -1) {
		vars[m[1]] = true
	}
	if len(vars) < 5 {
		t.Fatalf("%s --help lists %d variables: cannot parse it\n%s", name, len(vars), out)
	}
	return vars
}
