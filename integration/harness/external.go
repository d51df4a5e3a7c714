package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Process is an auxiliary program a test runs next to the cluster (a
// Prometheus server, a client binary), started by StartProcess.
type Process struct {
	p       *process
	logPath string
}

// StartProcess starts binary with args, its output appended to logPath,
// and registers a t.Cleanup that stops it by its pid (SIGTERM, then SIGKILL
// after 10 s) and waits for it. Like the nodes, it dies with the test binary
// even when no cleanup runs (see the package documentation).
func StartProcess(t testing.TB, binary string, args []string, logPath string) (*Process, error) {
	t.Helper()
	p, err := startProcess(filepath.Base(binary), binary, args, os.Environ(), logPath)
	if err != nil {
		return nil, fmt.Errorf("harness: start %s: %w", binary, err)
	}
	t.Cleanup(func() {
		if p.stop(10 * time.Second) {
			t.Logf("harness: %s (pid %d) ignored SIGTERM; sent SIGKILL", binary, p.pid)
		}
	})
	return &Process{p: p, logPath: logPath}, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.p.pid }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool { return p.p.exited() }

// LogTail returns the last lines of the process's output.
func (p *Process) LogTail(lines int) string { return tailFile(p.logPath, lines) }
