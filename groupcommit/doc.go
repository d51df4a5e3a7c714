// Package groupcommit batches work submitted concurrently into few, large
// flushes: while a flush runs, the next batch accumulates.
//
// The registry uses it for beats and for registrations. On the leader a
// flush proposes one Raft entry (a BeatBatch, a WriteBatch); on a follower
// it forwards the batch to the leader in one call. Flushes start at least
// Window apart, so the number of flushes per second (Raft entries,
// forwarded calls) stays bounded by 1/Window however many callers submit,
// until batches reach MaxItems. At most MaxInflight flushes run at once
// (default 1): with more, a new batch is proposed while the previous one is
// still replicating, and each submission is answered when its own flush
// ends, whatever the order in which flushes end.
//
// A Batcher owns one goroutine, started by New and stopped by Close, and
// one goroutine per flush under way; Close waits for all of them. Submit is
// safe for concurrent use; a submission is never split across two flushes.
package groupcommit
