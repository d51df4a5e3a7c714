// Package defaults fills the zero fields of a config from its defaults,
// one field at a time: the helper every package's WithDefaults uses, so
// that each default is written once, in its package's DefaultConfig.
package defaults

// Set sets *p to def when *p is the zero value of its type. Funcs are not
// comparable: a func field needs its own nil check.
func Set[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}
