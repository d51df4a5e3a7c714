// Package integration holds the end-to-end tests of registry-node: each test
// starts real node processes on loopback addresses (package harness) and
// talks to them only through the public gRPC API, as a client would.
//
// The tests read as the specification of what the registry promises across
// processes: a write acknowledged by any node is readable on every node, it
// survives the loss of the leader and a restart of every node from disk,
// invalid input never reaches the Raft log, and beats are group-committed.
// The liveness tests hold the leader's expiry checker to the bounds of
// package beatcheck, measured as a client sees them: a dead instance is
// suspected, then removed, no sooner than its TTL after its last
// acknowledged beat and no later than the documented bound, also across a
// leader change; no beating instance is removed while the leader is killed
// or paused; and the mass-expiry guard holds expiries and clears by itself.
// The interface test (interfaces_test.go) talks to the nodes as the other
// clients do too, through DNS, the Consul-compatible API
// (hashicorp/consul/api) and UDP beats, and kills the leader under all of
// them at once: nothing that kept beating expires.
//
// The fault suite (faults, leaderchange, crashloop, membership,
// snapshotcatchup, clockskew and the dead-instance liveness tests) records
// every client operation and checks the history with package check:
// linearizability with porcupine, acknowledged writes lost, stale reads,
// false expirations, detection latency, failover time. Each scenario adds a
// row to one table (report_test.go), printed at the end of the run and
// written to $REGCENTER_REPORT. Set REGCENTER_SOAK to a duration for the
// long form (`make soak DURATION=30m`: the scenarios one at a time, each
// for its share of the duration, in rounds with fresh histories), and
// REGCENTER_TEST_LOG_DIR to keep the histories, porcupine's visualisations
// and the node logs. docs/reliability.md describes each scenario and
// records a soak.
//
// Run them with
//
//	go test -race -count=1 ./integration/...
//
// They build ./cmd/registry-node once per run (or use the binary named by
// REGCENTER_TEST_NODE_BINARY). -short shrinks the load tests.
package integration
