package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/regcenter/registry/internal/proc"
)

// Process is an auxiliary program a test runs next to the cluster (a
// Prometheus server, a client binary), started by StartProcess.
type Process struct {
	p *proc.Process
}

// StartProcess starts binary with args, its output appended to logPath,
// and registers a t.Cleanup that stops it by its pid (SIGTERM, then SIGKILL
// after 10 s) and waits for it. Like the nodes, it dies with the test binary
// even when no cleanup runs (see the package documentation).
func StartProcess(t testing.TB, binary string, args []string, logPath string) (*Process, error) {
	t.Helper()
	p, err := proc.Start(proc.Spec{Binary: binary, Args: args, Env: os.Environ(), LogPath: logPath})
	if err != nil {
		return nil, fmt.Errorf("harness: start %s: %w", binary, err)
	}
	t.Cleanup(func() {
		if p.Stop(10 * time.Second) {
			t.Logf("harness: %s (pid %d) ignored SIGTERM; sent SIGKILL", binary, p.PID())
		}
	})
	return &Process{p: p}, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.p.PID() }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool { return p.p.Exited() }

// LogTail returns the last lines of the process's output.
func (p *Process) LogTail(lines int) string { return p.p.LogTail(lines) }

// StartPrometheus starts a Prometheus server (binary) with config as its
// prometheus.yml, listening on listen, its data and log in a temporary
// directory, through StartProcess. When the test fails, its log tail and
// config are logged.
func StartPrometheus(t testing.TB, binary, config, listen string) (*Process, error) {
	t.Helper()
	dir := t.TempDir()
	configPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return nil, err
	}
	p, err := StartProcess(t, binary, []string{
		"--config.file=" + configPath,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + listen,
		"--log.level=warn",
	}, filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- prometheus log ---\n%s\n--- config ---\n%s", p.LogTail(40), config)
		}
	})
	return p, nil
}
