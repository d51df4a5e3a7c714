package node

import (
	"sync"
	"time"
)

// skewWindow is how far back the clock skew estimate looks, in seconds.
const skewWindow = 10

// skewTracker estimates this node's clock minus the leader's from the
// leader's timestamps in applied commands. Each difference is the skew plus
// the replication delay, so the smallest one over the window is the best
// estimate (it still includes the least delay).
type skewTracker struct {
	clock   func() time.Time
	mu      sync.Mutex
	buckets [skewWindow]struct {
		sec int64
		min int64
	}
}

// observe records one leader timestamp (Unix ns). It is called by the fsm
// after each applied command.
func (s *skewTracker) observe(stampUnixNs int64) {
	now := s.clock().UnixNano()
	d, sec := now-stampUnixNs, now/int64(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &s.buckets[sec%skewWindow]
	if b.sec != sec || d < b.min {
		b.sec, b.min = sec, d
	}
}

// estimate returns the smallest difference seen over the window, and false
// when nothing was applied in it.
func (s *skewTracker) estimate() (time.Duration, bool) {
	sec := s.clock().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	var best int64
	found := false
	for _, b := range s.buckets {
		if b.sec > sec-skewWindow && b.sec <= sec && (!found || b.min < best) {
			best, found = b.min, true
		}
	}
	return time.Duration(best), found
}
