package defaults

import (
	"testing"
	"time"
)

func TestSetFillsOnlyZeroValues(t *testing.T) {
	var zero, set time.Duration = 0, time.Second
	Set(&zero, time.Minute)
	Set(&set, time.Minute)
	if zero != time.Minute || set != time.Second {
		t.Errorf("zero became %v (want 1m), set became %v (want 1s)", zero, set)
	}
}

func TestFillSetsEachZeroFieldAndKeepsTheRest(t *testing.T) {
	type inner struct{ A, B int }
	type config struct {
		Set      time.Duration
		Zero     time.Duration
		Func     func() int
		Pointer  *int
		Nested   inner
		Partial  inner
		unexport int
	}
	one := 1
	def := config{Set: time.Minute, Zero: time.Hour, Func: func() int { return 7 }, Pointer: &one,
		Nested: inner{A: 1, B: 2}, Partial: inner{A: 1, B: 2}, unexport: 9}
	got := config{Set: time.Second, Partial: inner{A: 5}}
	Fill(&got, def)
	if got.Set != time.Second || got.Zero != time.Hour {
		t.Errorf("Set, Zero = %v, %v; want 1s (kept), 1h (filled)", got.Set, got.Zero)
	}
	if got.Func == nil || got.Func() != 7 || got.Pointer != &one {
		t.Errorf("a nil func or pointer was not filled")
	}
	if got.Nested != (inner{A: 1, B: 2}) || got.Partial != (inner{A: 5}) {
		t.Errorf("Nested, Partial = %+v, %+v; want the default whole, and the partly set struct kept", got.Nested, got.Partial)
	}
	if got.unexport != 0 {
		t.Errorf("an unexported field was filled: %d", got.unexport)
	}
}
