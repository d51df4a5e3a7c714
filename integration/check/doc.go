// Package check records client histories against a registry cluster and
// checks them: linearizability of register / deregister / LINEARIZABLE
// GetService with porcupine (a model partitioned by service), acknowledged
// writes missing from the final state, and the timing of expirations
// against the beats a harness.Beater had acknowledged.
//
// # Clock
//
// A History stamps every call and return with one monotonic clock (the
// time since the History was made, by time.Since), so the order of
// non-overlapping operations is the real-time order that linearizability
// respects. An operation whose outcome the client does not know (a timeout,
// UNAVAILABLE after the request may have been forwarded) is recorded with
// no return: porcupine sees it as concurrent with everything after its call,
// so it may have taken effect at any later point or never.
//
// # Failure output
//
// When a check fails, the history (JSON, one operation per line) and
// porcupine's HTML visualisation are written to the test's log directory
// ($REGCENTER_TEST_LOG_DIR/<test name>, else t.TempDir(), which go test
// removes: set the variable to keep them) and named in the failure.
//
// # Concurrency
//
// History is safe for concurrent use by any number of client goroutines.
// The checks are called from the test goroutine once the clients stop.
package check
