package node

import (
	"testing"
	"time"
)

func TestSkewEstimateIsTheSmallestRecentDifference(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	s := &skewTracker{clock: func() time.Time { return now }}
	if _, ok := s.estimate(); ok {
		t.Fatal("an estimate before any command was applied")
	}
	// The leader's clock is 300ms behind ours; replication takes 5-50ms.
	leader := func() int64 { return now.Add(-300 * time.Millisecond).UnixNano() }
	for _, delay := range []time.Duration{50, 5, 20} {
		s.observe(leader() - int64(delay*time.Millisecond))
		now = now.Add(time.Second)
	}
	if got, _ := s.estimate(); got != 305*time.Millisecond {
		t.Errorf("estimate %v, want 305ms (the skew plus the least delay)", got)
	}
	// Eleven seconds later the old samples have left the window.
	now = now.Add(11 * time.Second)
	s.observe(now.Add(time.Second).UnixNano()) // now the leader is 1s ahead
	if got, _ := s.estimate(); got != -time.Second {
		t.Errorf("estimate %v, want -1s once the old samples aged out", got)
	}
}
