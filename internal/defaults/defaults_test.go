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
