// Package poll waits for a state by polling a condition with a deadline:
// [Until] for code that returns an error, [Eventually] for tests that fail
// instead. It is the one polling helper of the module's test support (the
// process harness, the in-memory node clusters, the client and command
// tests, registry-bench), so that nothing sleeps for a fixed time to wait
// for a state.
//
// It does not import package testing: [Eventually] takes the small [TB]
// interface that *testing.T, *testing.B, *testing.F and testing.TB
// satisfy, so that non-test programs (registry-bench) can import it.
//
// # Concurrency
//
// [Until] may be called from any goroutine; cond is called from the
// caller's goroutine only, one call at a time. [Eventually], like t.Fatal,
// must be called from the test goroutine.
package poll
