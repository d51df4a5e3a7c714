package client

import (
	"log/slog"
	"testing"
	"time"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// The send loop wakes up for every added registration and every frame
// due; the scan for lost registrations runs at most every checkEvery, and
// still reports Lost no later than checkEvery after suspect_after.
func TestLostIsReportedWithinCheckEveryButNotScannedOnEveryWakeUp(t *testing.T) {
	c := &Client{log: slog.New(slog.DiscardHandler)}
	bt := newBeater(c)
	t0 := time.Unix(1_000_000, 0)
	r := &Registration{c: c, spec: &registryv1.Instance{Service: "s", Id: "a", Incarnation: 1}, events: make(chan RegistrationEvent, 4)}
	bt.states[r] = &beatState{reg: r, incarnation: 1, suspectAfter: time.Second, lastAck: t0, idx: -1}

	lost := func() bool {
		select {
		case ev := <-r.events:
			return ev.Type == Lost
		default:
			return false
		}
	}
	bt.checkLost(t0.Add(950 * time.Millisecond)) // a scan: nothing lost yet
	if lost() {
		t.Fatal("Lost before suspect_after")
	}
	bt.checkLost(t0.Add(1010 * time.Millisecond)) // a wake-up 60ms later: no scan
	if lost() {
		t.Fatal("Lost reported by a wake-up within checkEvery of the last scan: the scan ran on every wake-up")
	}
	bt.checkLost(t0.Add(1060 * time.Millisecond)) // checkEvery after the last scan
	if !lost() {
		t.Fatal("no Lost within checkEvery of suspect_after")
	}
}
