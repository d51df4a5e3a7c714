// Package groupcommit batches work submitted concurrently into few, large
// flushes: while one flush runs, the next batch accumulates.
//
// The registry uses it for beats. On the leader a flush proposes one
// BeatBatch Raft entry; on a follower it forwards one Beat call to the
// leader. Flushes start at least Window apart, so the number of flushes per
// second (Raft entries, forwarded calls) stays bounded by 1/Window however
// many instances beat, until batches reach MaxItems.
//
// A Batcher owns one goroutine, started by New and stopped by Close, which
// waits for it. Submit is safe for concurrent use; a submission is never
// split across two flushes.
package groupcommit
