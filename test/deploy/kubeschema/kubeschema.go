// Package kubeschema validates Kubernetes manifests offline against the
// built-in schemas of one Kubernetes version, with kubectl-validate's
// validator and the schemas it embeds: unknown fields, wrong types and
// missing required fields are errors, as `kubectl apply --dry-run=server`
// would report them, with no cluster and no network.
//
// It is its own Go module because kubectl-validate v0.0.4 builds only
// against the Kubernetes libraries of its release (k8s.io/* v0.30), while
// helm v3.22 needs v0.37: one build cannot hold both, so the deploy tests
// (helm's module) run this module's cmd/kubeschema, which `go run` builds
// and caches like any dependency.
package kubeschema

import (
	"errors"
	"fmt"
	"slices"

	"sigs.k8s.io/kubectl-validate/pkg/cmd"
	"sigs.k8s.io/kubectl-validate/pkg/openapiclient"
	"sigs.k8s.io/kubectl-validate/pkg/utils"
	"sigs.k8s.io/kubectl-validate/pkg/validator"
)

// ErrUnknownVersion: no embedded schemas for the requested Kubernetes version.
var ErrUnknownVersion = errors.New("kubeschema: no built-in schemas for this Kubernetes version")

// Versions lists the Kubernetes versions ("1.30") whose schemas are embedded.
func Versions() []string { return slices.Clone(openapiclient.HardcodedBuiltinVersions) }

// Validator checks manifests against one Kubernetes version's schemas.
type Validator struct {
	v *validator.Validator
}

// New returns a validator for version ("1.30"), which must be one of
// Versions: the schemas come from the embedded copies only, never from a
// cluster or the network.
func New(version string) (*Validator, error) {
	if !slices.Contains(openapiclient.HardcodedBuiltinVersions, version) {
		return nil, fmt.Errorf("%w: %q (have %v)", ErrUnknownVersion, version, openapiclient.HardcodedBuiltinVersions)
	}
	// kubectl-validate's own chain without the kubeconfig and GitHub
	// sources: hand-written schema patches over the embedded builtins.
	v, err := validator.New(openapiclient.NewOverlay(
		openapiclient.HardcodedPatchLoader(version),
		openapiclient.NewHardcodedBuiltins(version),
	))
	if err != nil {
		return nil, fmt.Errorf("kubeschema: load the %s schemas: %w", version, err)
	}
	return &Validator{v: v}, nil
}

// Validate checks a YAML stream and returns one error per non-empty
// document (nil for a valid one), in order.
func (v *Validator) Validate(yamlStream []byte) ([]error, error) {
	docs, err := utils.SplitYamlDocuments(yamlStream)
	if err != nil {
		return nil, fmt.Errorf("kubeschema: split YAML: %w", err)
	}
	var errs []error
	for _, d := range docs {
		if utils.IsEmptyYamlDocument(d) {
			continue
		}
		errs = append(errs, cmd.ValidateDocument(d, v.v))
	}
	return errs, nil
}
