// Package fsm is the registry's deterministic Raft state machine.
//
// # What it owns
//
//   - The log format: a command is one MessageType byte followed by the
//     deterministic protobuf encoding of a fsmpb message (Encode, Decode).
//     Types are append-only and never renumbered. A type byte with
//     IgnoreUnknownTypeFlag set is skipped by nodes that do not know it, so
//     optional commands can be rolled out before every node is upgraded.
//     Each command type is declared once, in the command table (commands in
//     command.go): its number, name, message, apply function and response
//     type. String, Encode, Decode, TypeOf and Apply's dispatch derive from it.
//   - The state (State): instances indexed by service and id, node metadata,
//     and the pure mutation and query methods over them.
//   - Apply (FSM): decode, dispatch, and the bounded history of events that
//     watchers read with Reset and EventsAfter.
//   - Snapshot and Restore, in a versioned stream of length-delimited
//     records; Hash digests the same stream. The same stream is the
//     registry's backup format: WriteSnapshot writes it on demand, and
//     PrepareRestore checks a backup and re-encodes it for raft's user
//     restore (with the index it will be installed at and this cluster's
//     node records). Restore never moves the applied index back: restoring
//     over applied state sets it past the FSM's own, so every watcher resets.
//   - Proposing: Propose[R] derives a command's type from its message,
//     encodes it and hands the Entry to a Proposer (the node, the only
//     caller of raft.Apply), then checks that the response is the R the
//     table declares. ErrLeadershipLost is the one error that means "this
//     node does not lead": the node wraps Raft's variants in it.
//   - Test support, in package fsmtest: log builders, a snapshot round trip
//     and a Replica that implements Proposer without Raft.
//   - Hooks for the node, outside the state: ObserveStamp (clock skew),
//     ObserveEvents (metrics) and OnRestore (the checker's grace).
//
// # Determinism
//
// Apply is a pure function of the state and the log entry: no wall clock, no
// randomness, no decision that depends on map iteration order. The proposer
// stamps its clock into the command (now_unix_ns); versions are Raft indexes
// (CreateIndex, ModifyIndex, LastBeatIndex). Replicas that applied the same
// log have byte-identical snapshots and the same Hash.
//
// # Apply rules
//
// Register upserts by (service, id, incarnation): a lower incarnation than
// the stored one is fenced (ErrFenced); the same incarnation is an
// idempotent update that also counts as a beat; a higher one supersedes the
// stored instance. Deregister removes an instance (ErrNotFound if absent,
// ErrFenced if it names another non-zero incarnation). BeatBatch renews
// instances and rejects beats for absent instances or other incarnations
// without failing the batch. MarkSuspect and Expire are conditional: each
// entry names the incarnation and LastBeatIndex the proposer saw and is
// skipped if the instance has changed since, so a beat or re-registration
// that raced the checker wins. WriteBatch (the group commit of concurrent
// Register and Deregister calls) applies its writes in order at one index,
// each as Register or Deregister alone would, and fails none but the write
// that fails: its WriteResult holds that write's error.
//
// The ACL commands (ACLBootstrap, ACLPolicySet, ACLPolicyDelete,
// ACLTokenSet, ACLTokenDelete) keep policies as their rules text (the
// proposer checked it with acl.Parse) and tokens by accessor id and by the
// SHA-256 of their secret: the proposer generates ids and secrets, and the
// log, the state and the snapshots never hold a secret. ACLBootstrap applies
// once (ErrACLBootstrapped after); every ACL change moves the ACL index
// (ACLIndex, which a Restore moves too), by which resolvers invalidate
// their caches.
//
// Domain errors are returned from Apply as error values (read them from the
// raft future's Response); other responses are pointers to the *Result types.
// A log entry that cannot be decoded panics (fail-stop): a replica that
// skipped it would diverge from the others.
//
// # Concurrency
//
// Apply, Snapshot and Restore are called by raft from one goroutine. Every
// other method is safe for concurrent use: reads take a read lock and return
// copies (Instance.Metadata maps are shared and must not be mutated), together
// with the applied index they reflect. Snapshot copies the instances under
// the read lock; the returned snapshot encodes them in Persist without the
// lock, concurrently with Apply. Restore decodes into a new State and swaps
// it in under the write lock, so readers see the old state or the new one.
//
// Watchers take Changed before reading, read with Reset or EventsAfter, then
// wait on the channel, which Apply and Restore close. State does no locking
// of its own.
package fsm
