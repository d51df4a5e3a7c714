package node

import (
	"sync"
	"time"
)

// leaderClock is the clock this node stamps commands with and its checker
// judges deadlines by: the node's own clock (base) moved onto the time base
// of the leaders before it. Instances' last beats carry the timestamps of
// the leader that applied them; a new leader whose own clock is behind the
// previous leader's would see them in the future and remove the instances
// that died before it took over only once its clock caught up.
//
// Two rules keep the cluster's time base continuous:
//
//   - now never returns a time below the latest leader timestamp applied
//     here (observe), so no stamp goes back;
//   - on gaining leadership (adopt), the node adds to its clock the amount
//     by which that timestamp is ahead of it, so that time keeps moving from
//     the previous leader's base instead of standing still until the local
//     clock catches up.
//
// The offset is never negative: a last timestamp behind this node's clock
// may simply be old (an idle cluster), so it says nothing about the
// previous leader's clock. A leader whose clock is ahead keeps its own, and
// the failover grace covers the skew for the instances that still beat.
type leaderClock struct {
	base func() time.Time

	mu     sync.Mutex
	last   int64         // the latest leader timestamp applied, Unix ns
	offset time.Duration // added to base since the last adopt
}

func newLeaderClock(base func() time.Time) *leaderClock {
	return &leaderClock{base: base}
}

// now returns max(base + offset, the latest applied timestamp).
func (c *leaderClock) now() time.Time {
	t := c.base()
	c.mu.Lock()
	defer c.mu.Unlock()
	t = t.Add(c.offset)
	if last := time.Unix(0, c.last); last.After(t) {
		return last
	}
	return t
}

// observe records a leader timestamp (Unix ns) of an applied command.
func (c *leaderClock) observe(stampUnixNs int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = max(c.last, stampUnixNs)
}

// adopt moves this clock onto the time base of the latest applied
// timestamp: the offset becomes how far that timestamp is ahead of base
// (0 when it is not). The node calls it on gaining leadership, once
// everything from earlier terms is applied, and returns the adopted offset.
func (c *leaderClock) adopt() time.Duration {
	t := c.base()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset = max(0, time.Unix(0, c.last).Sub(t))
	return c.offset
}
