// Package defaults fills the zero fields of a config from its defaults,
// one field at a time: the helpers every package's WithDefaults uses, so
// that each default is written once, in its package's DefaultConfig.
package defaults
