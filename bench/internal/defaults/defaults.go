// Package defaults fills the zero fields of the benchmark tools' configs:
// every config there reads "zero means the default", so the rule has one
// home instead of an if-block per field.
package defaults

// Set stores def in *p when *p is its type's zero value.
func Set[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}
