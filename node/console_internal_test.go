package node

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestConsoleSamplerKeepsPerSecondRatesOfTheLastTwoMinutes(t *testing.T) {
	s := &consoleSampler{}
	if got := s.series(); len(got.BeatsPerSecond) != 0 || len(got.ExpirationsPerSecond) != 0 {
		t.Fatalf("before any sample: %+v, want empty series", got)
	}
	// The first sample only primes the counters: no rate yet.
	s.add(100, 5)
	s.add(130, 5)
	s.add(130, 7)
	// A counter that goes down (a restarted registry) is no negative rate.
	s.add(10, 7)
	got := s.series()
	if diff := cmp.Diff(consoleSeries{BeatsPerSecond: []float64{30, 0, 0}, ExpirationsPerSecond: []float64{0, 2, 0}}, got); diff != "" {
		t.Errorf("series (-want +got):\n%s", diff)
	}
	for i := range consoleSamples + 10 {
		s.add(10+float64(i+1), 7)
	}
	got = s.series()
	if len(got.BeatsPerSecond) != consoleSamples || got.BeatsPerSecond[0] != 1 {
		t.Errorf("after %d more samples: %d values starting %v, want the last %d, all 1", consoleSamples+10, len(got.BeatsPerSecond), got.BeatsPerSecond[:3], consoleSamples)
	}
}
