package node

import (
	"testing"
	"time"
)

func TestLeaderClockContinuesFromThePreviousLeadersTimeBase(t *testing.T) {
	base := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	c := newLeaderClock(func() time.Time { return base })
	if got := c.now(); !got.Equal(base) {
		t.Fatalf("before any stamp: now %v, want the base clock %v", got, base)
	}

	// The previous leader's clock runs 5s ahead of this node's.
	prev := base.Add(5 * time.Second)
	c.observe(prev.UnixNano())
	c.observe(prev.Add(-time.Second).UnixNano()) // an older stamp does not lower it
	if got := c.now(); !got.Equal(prev) {
		t.Errorf("after a stamp ahead: now %v, want no earlier than the stamp %v", got, prev)
	}
	// As a follower, time does not move until the base passes the stamp...
	base = base.Add(time.Second)
	if got := c.now(); !got.Equal(prev) {
		t.Errorf("follower 1s later: now %v, want the stamp %v", got, prev)
	}
	// ...but a leader adopts the offset and time moves on from the stamp.
	if off := c.adopt(); off != 4*time.Second {
		t.Errorf("adopted offset %v, want 4s", off)
	}
	base = base.Add(3 * time.Second)
	if got, want := c.now(), prev.Add(3*time.Second); !got.Equal(want) {
		t.Errorf("leader 3s later: now %v, want %v", got, want)
	}

	// A stamp behind this node's clock (an idle cluster, or a leader whose
	// clock is behind) never sets the clock back: the offset is not negative.
	c2 := newLeaderClock(func() time.Time { return base })
	c2.observe(base.Add(-time.Minute).UnixNano())
	if off := c2.adopt(); off != 0 {
		t.Errorf("adopted offset %v from an old stamp, want 0", off)
	}
	if got := c2.now(); !got.Equal(base) {
		t.Errorf("now %v, want the base %v", got, base)
	}

	// A base that steps back does not take stamps below the last one.
	c3 := newLeaderClock(func() time.Time { return base })
	c3.observe(base.UnixNano())
	c3.adopt()
	base = base.Add(-2 * time.Second)
	if got, want := c3.now(), time.Unix(0, c3.last); got.Before(want) {
		t.Errorf("base stepped back: now %v, below the last stamp %v", got, want)
	}
}
