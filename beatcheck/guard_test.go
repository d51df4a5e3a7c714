package beatcheck

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/regcenter/registry/fsm"
)

// Instances cut off together stop beating at different points of their
// interval: their deadlines are spread over several sweeps. The guard must
// engage before the first of them expires, not after 30 % are gone.
func TestTheGuardEngagesBeforeAnyOfASpreadMassFailureExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		c, stop := r.start(Config{})
		defer stop()
		time.Sleep(10 * time.Second)
		all := ids("i", 100)
		live, late := all[:20], all[47:]
		r.register(all...)
		// 27 instances beat for the last time now, 53 others 900ms later
		// (their last beat of the interval), then all 80 are cut off.
		time.Sleep(900 * time.Millisecond)
		r.beat(late...)
		r.beat(live...)
		for range 10 {
			time.Sleep(time.Second)
			r.beat(live...)
		}
		synctest.Wait()
		if got := r.events(fsm.EventExpired); len(got) != 0 {
			t.Fatalf("%d of the 80 cut instances expired before the guard engaged: %v", len(got), got[:min(5, len(got))])
		}
		if st := c.Status(); !st.GuardEngaged || st.Held != 80 {
			t.Errorf("status %+v: want the guard engaged holding all 80", st)
		}
	})
}
