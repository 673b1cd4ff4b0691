package kubeschema_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/switchboardgw/switchboard/test/deploy/kubeschema"
)

// The validator must reject what a typo produces, or a green chart test
// proves nothing.
func TestValidatorCatchesMistakes(t *testing.T) {
	v, err := kubeschema.New("1.30")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		doc  string
		want string // "" for valid
	}{
		"good":         {"apiVersion: v1\nkind: Service\nmetadata:\n  name: ok\nspec:\n  ports:\n    - port: 80\n", ""},
		"typo":         {"apiVersion: v1\nkind: Service\nmetadata:\n  name: typo\nspec:\n  prots:\n    - port: 80\n", "prots"},
		"wrong type":   {"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: wrong\nspec:\n  replicas: three\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: c, image: i}]\n", "replicas"},
		"missing":      {"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: nocontainers\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {}\n", "containers"},
		"unknown kind": {"apiVersion: v1\nkind: Servise\nmetadata:\n  name: x\n", "Servise"},
	}
	for name, c := range cases {
		errs, err := v.Validate([]byte(c.doc))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(errs) != 1 {
			t.Fatalf("%s: %d verdicts, want 1", name, len(errs))
		}
		switch {
		case c.want == "" && errs[0] != nil:
			t.Errorf("%s: a valid object was rejected: %v", name, errs[0])
		case c.want != "" && errs[0] == nil:
			t.Errorf("%s: passed validation, want an error naming %q", name, c.want)
		case c.want != "" && !strings.Contains(errs[0].Error(), c.want):
			t.Errorf("%s: error %q does not name %q", name, errs[0], c.want)
		}
	}
}

func TestValidatorJudgesEveryDocument(t *testing.T) {
	v, err := kubeschema.New("1.30")
	if err != nil {
		t.Fatal(err)
	}
	stream := "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {k: 1}\n"
	errs, err := v.Validate([]byte(stream))
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 2 || errs[0] != nil || errs[1] == nil {
		t.Fatalf("verdicts %v: want [nil, error] (data values must be strings)", errs)
	}
}

func TestUnknownVersionIsRefused(t *testing.T) {
	if !slices.Contains(kubeschema.Versions(), "1.30") {
		t.Fatalf("versions %v lack 1.30", kubeschema.Versions())
	}
	if _, err := kubeschema.New("1.99"); !errors.Is(err, kubeschema.ErrUnknownVersion) {
		t.Fatalf("New(1.99) = %v, want ErrUnknownVersion", err)
	}
}
