package check

import (
	"fmt"
	"slices"
	"time"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
)

// FalseExpiration is an EXPIRED event for an instance whose beater had an
// acknowledged beat less than the instance's TTL before the event, by the
// test's local clock.
type FalseExpiration struct {
	Event harness.RecordedEvent
	// SinceBeat is from the sending of the last acknowledged beat to the
	// event's receipt; a correct registry makes it at least TTL.
	SinceBeat time.Duration
	TTL       time.Duration // or suspect_after, for FalseSuspicions
}

func (f FalseExpiration) String() string {
	return fmt.Sprintf("%s %v at index %d (via %s) %v after its last acknowledged beat was sent; bound %v",
		f.Event.Key(), f.Event.GetType(), f.Event.GetIndex(), f.Event.Node, f.SinceBeat.Round(time.Millisecond), f.TTL)
}

// FalseExpirations checks every EXPIRED event the recorder received
// against the beater's records. The registry stamps a beat no earlier than
// its sending and may expire an instance only TTL after its last beat's
// stamp, and the event is received after it is committed: so an EXPIRED
// received less than TTL after the sending of an acknowledged beat (or one
// whose beat was acknowledged after the event) is an expiry the registry
// must not make, whatever any node's clock says. ttl gives each instance's
// TTL. Instances the beater does not know are not checked.
func FalseExpirations(events []harness.RecordedEvent, beats map[harness.InstanceKey]harness.BeatRecord, ttl func(harness.InstanceKey) time.Duration) []FalseExpiration {
	return falseTransitions(registryv1.EventType_EVENT_TYPE_EXPIRED, events, beats, ttl)
}

// FalseSuspicions is FalseExpirations for SUSPECT events, against each
// instance's suspect_after.
func FalseSuspicions(events []harness.RecordedEvent, beats map[harness.InstanceKey]harness.BeatRecord, suspectAfter func(harness.InstanceKey) time.Duration) []FalseExpiration {
	return falseTransitions(registryv1.EventType_EVENT_TYPE_SUSPECT, events, beats, suspectAfter)
}

func falseTransitions(typ registryv1.EventType, events []harness.RecordedEvent, beats map[harness.InstanceKey]harness.BeatRecord, ttl func(harness.InstanceKey) time.Duration) []FalseExpiration {
	var out []FalseExpiration
	for _, e := range events {
		if e.GetType() != typ {
			continue
		}
		rec, ok := beats[e.Key()]
		if !ok {
			continue
		}
		d := ttl(e.Key())
		since := e.ReceivedAt.Sub(rec.LastAckSent)
		if since < d || rec.LastAck.After(e.ReceivedAt) {
			out = append(out, FalseExpiration{Event: e, SinceBeat: since, TTL: d})
		}
	}
	return out
}

// Latencies are percentiles of detection latency: from the sending of an
// instance's last acknowledged beat to the receipt of its EXPIRED event.
type Latencies struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

func (l Latencies) String() string {
	return fmt.Sprintf("n=%d p50=%v p90=%v p99=%v max=%v", l.N,
		l.P50.Round(time.Millisecond), l.P90.Round(time.Millisecond), l.P99.Round(time.Millisecond), l.Max.Round(time.Millisecond))
}

// DetectionLatencies measures the EXPIRED events of the given instances
// (typically those the beater halted).
func DetectionLatencies(events []harness.RecordedEvent, beats map[harness.InstanceKey]harness.BeatRecord, keys []harness.InstanceKey) Latencies {
	var ds []time.Duration
	for _, e := range events {
		if e.GetType() != registryv1.EventType_EVENT_TYPE_EXPIRED || !slices.Contains(keys, e.Key()) {
			continue
		}
		if rec, ok := beats[e.Key()]; ok {
			ds = append(ds, e.ReceivedAt.Sub(rec.LastAckSent))
		}
	}
	return Percentiles(ds)
}

// Percentiles summarises ds (nearest rank); ds is sorted in place.
func Percentiles(ds []time.Duration) Latencies {
	if len(ds) == 0 {
		return Latencies{}
	}
	slices.Sort(ds)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.5) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	return Latencies{N: len(ds), P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: ds[len(ds)-1]}
}
