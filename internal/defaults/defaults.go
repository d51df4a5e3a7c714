package defaults

import "reflect"

// Set sets *p to def when *p is the zero value of its type. Funcs are not
// comparable: a func field needs Fill or its own nil check.
func Set[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Fill sets each exported field of *p that holds its type's zero value
// (nil for funcs, pointers and interfaces) to that field of def. A struct
// field is taken whole from def only when it is entirely zero: a nested
// config completes itself first, through its own WithDefaults. Fill is for
// configs in which zero always means "the default"; a field whose zero
// value means something else (an empty address that turns a listener off)
// must not go through it.
func Fill[T any](p *T, def T) {
	v, d := reflect.ValueOf(p).Elem(), reflect.ValueOf(def)
	for i := range v.NumField() {
		if f := v.Field(i); f.CanSet() && f.IsZero() {
			f.Set(d.Field(i))
		}
	}
}
