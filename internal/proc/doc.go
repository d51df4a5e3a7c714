// Package proc starts and stops the child processes of the module's test
// support: the registry-node processes of the integration harness
// (integration/harness) and of registry-bench, and auxiliary programs a
// test runs next to them. It is a non-test package without test-only
// dependencies, so that a command can import it.
//
// # What it owns
//
// [Start] starts one process from a [Spec]: a binary, its flags and
// environment, and a log file that its stdout and stderr are appended to
// after a header line. A [Process] is signalled only through its
// *os.Process (a pidfd on Linux), never by name, so a recycled pid is never
// hit: [Process.Kill], [Process.Stop] (SIGTERM, then SIGKILL after a
// grace), [Process.Signal]. [Process.WaitReady] polls a readiness condition
// and gives up early, with the log's tail, if the process exits. A [Slot]
// holds the current process of something restarted with the same flags (a
// node). [Build] compiles a main package of this module into a temporary
// directory.
//
// # Process lifetime
//
// On Linux every process is started by [Spawn] with PR_SET_PDEATHSIG=SIGKILL
// from one dedicated OS thread that lives as long as the parent program, so
// a child dies with its parent even when no cleanup runs (a panic in a
// non-test goroutine, the go test -timeout alarm, a SIGKILLed benchmark).
// The kernel sends that signal when the thread that forked the child exits,
// not the process; Go may retire threads, hence the one locked thread. The
// goroutine that owns it never returns: leak checkers ignore
// [SpawnerFunction].
//
// # Concurrency
//
// Process and Slot methods are safe for concurrent use. A goroutine per process
// reaps it; [Process.Done] is closed once it has.
package proc
