// Package raftnet wraps a hashicorp/raft Transport so that a leader catches
// a restarted follower up as soon as the follower listens again.
//
// Why: hashicorp/raft's replication loop (replication.go, replicateTo)
// sleeps backoff(10ms, failures, 12) after each failed AppendEntries: 10,
// 10, 20, 40, ... 1280, 2560 ms, up to ~10 s, and nothing wakes it early.
// While a peer's process is dead every call fails at once (connection
// refused), so within two seconds the failure count is 9 and the leader
// sleeps 1.28 s, then 2.56 s, between attempts; a follower restarted in
// that window waits out the sleep before the leader sends it the log.
//
// What: when AppendEntries or InstallSnapshot fails to dial a peer that
// refuses connections (nothing was sent), Transport retries the same call
// every Config.PollInterval for at most Config.MaxWait, and returns as soon
// as the peer accepts. Raft sees one slow call instead of a string of fast
// failures, so its failure count, and its backoff, stay small; the call
// returns within a poll interval of the peer's listener coming back. Any
// other error (a timeout, a reset connection, a refused request) is
// returned at once, unchanged.
//
// Bounds: a wait ends at the first of: the peer accepts, MaxWait passes
// (the original error is returned, Raft counts one failure and carries
// on), Cancel(addr) (the peer was removed), CancelAll (this node stopped
// leading), StopWaiting or Close (shutdown). Raft's Shutdown waits for its
// replication goroutines before it closes the transport, so the owner calls
// StopWaiting first. RequestVote, RequestPreVote, TimeoutNow and pipelined
// AppendEntries are passed through untouched: elections and leadership
// transfers never wait here. Each peer has its own replication and
// heartbeat goroutines in Raft, so a wait for one peer holds up nothing
// sent to another.
//
// Concurrency: all methods are safe for concurrent use. Transport starts no
// goroutines; a wait runs in the caller's goroutine.
package raftnet
