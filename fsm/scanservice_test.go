package fsm_test

import (
	"slices"
	"testing"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmtest"
)

func TestScanServiceVisitsEachInstanceOfTheServiceOnly(t *testing.T) {
	f := fsmtest.New(t, fsm.Config{})
	fsmtest.Apply(t, f, 1, register("a", "1", 1, 100))
	fsmtest.Apply(t, f, 2, register("a", "2", 1, 100))
	fsmtest.Apply(t, f, 3, register("b", "1", 1, 100))
	var got []string
	known := f.ScanService("a", func(in *fsm.Instance) { got = append(got, in.Service+"/"+in.ID) })
	slices.Sort(got)
	if !known || !slices.Equal(got, []string{"a/1", "a/2"}) {
		t.Errorf("ScanService(a): %v, known %v; want a/1 and a/2", got, known)
	}
	if f.ScanService("c", func(*fsm.Instance) { t.Error("fn called for an unknown service") }) {
		t.Error("ScanService(c): known, want unknown")
	}
}
