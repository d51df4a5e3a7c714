// Package beatcheck is the leader-only expiry checker: it turns missed beats
// into SUSPECT marks and expiries, proposed through the local Raft.
//
// # When an instance is suspected and removed
//
// Every instance carries its own timing. With lastBeat its last
// acknowledged beat (the leader's timestamp in the replicated state), the
// checker computes
//
//	suspectAt = max(lastBeat + suspect_after, fence)
//	expireAt  = max(lastBeat + ttl,           fence)
//	fence     = max(promotedAt + FailoverGrace + beat_interval,
//	                resumedAt + stallGap, jumpedAt + FailoverGrace + beat_interval)
//
// promotedAt is when this node became leader and committed its barrier, or
// when the fsm last restored a snapshot on it (GrantGrace: an operator's
// restore of a backup brings instances with old last-beat timestamps);
// stallGap is a pause of the checker longer than StallFactor × SweepInterval
// (GC, SIGSTOP, a slow disk), measured on the monotonic clock, and resumedAt
// when it ended; jumpedAt is when the wall clock was seen to jump against
// the monotonic clock. The fence gives every instance, after any event that
// may have kept its beats from landing, the failover grace plus one own beat
// interval to beat again: a new leader never resets every instance to a full
// TTL, and never expires an instance only because the cluster had no leader
// or the leader was paused.
//
// Hence the bounds, with sweep the SweepInterval and commit the time to
// commit one entry:
//
//   - never removed earlier than ttl after its last acknowledged beat (by the
//     leader's clock; skew between nodes is absorbed by the fence);
//   - under a stable leader, removed no later than lastBeat + ttl + sweep +
//     commit;
//   - across a leader change, removed no later than
//     max(lastBeat + ttl, promotedAt + FailoverGrace + beat_interval) + sweep +
//     commit, where promotedAt follows the old leader's loss by the election
//     time.
//
// SUSPECT follows the same rules with suspect_after.
//
// # Guards
//
// A sweep proposes at most MaxExpiriesPerSweep expiries, chosen in random
// order across services so that no service is drained first. If the
// silent instances (no beat for their suspect_after, whether due to expire
// yet or not), together with those this leader expired in the last
// GuardWindow, exceed GuardShare of the live set at the window's start (the
// live instances plus those expired in the window) and GuardMinCount, the
// mass-expiry guard engages: the checker marks them SUSPECT and holds the
// expiries. Instances cut off together go
// silent within one beat interval, before the first is due to expire
// (suspect_after + beat_interval ≤ ttl with the defaults), so none is
// removed. It clears by itself when beats recover and the silent count falls
// back under the threshold; an operator can release it (Release).
// Both commands are conditional on the incarnation and last-beat index the
// checker saw, so a beat that races a sweep wins.
//
// # Cost
//
// A sweep reads only the instances that may be silent: the fsm keeps, per
// chunk of 128 instances, a lower bound of lastBeat + min(suspect_after,
// ttl) (fsm.FSM.ScanDue), and an instance before that time is kept
// whatever the fences, so skipping it changes no decision. Instances that
// beat in time put each chunk in a sweep about once per suspect_after -
// beat_interval, not ten times a second; the live count the guard needs
// comes from the fsm, not from the scan.
//
// # Concurrency
//
// Run blocks until its context ends; the node's leadership loop starts it
// after the leader barrier and cancels and waits for it on losing
// leadership. A Checker's Status and Release are safe to call from other
// goroutines. Proposals go to the local Raft only, never forwarded;
// not-leader and leadership-lost end Run quietly.
package beatcheck
