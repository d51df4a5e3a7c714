package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/regcenter/registry/internal/poll"
)

// ReapTimeout bounds the wait for a SIGKILLed process to be reaped.
const ReapTimeout = 10 * time.Second

// Spec says how to start a process.
type Spec struct {
	// Name names the process in the log header; default: the binary's
	// base name.
	Name string
	// Binary is the path of the program.
	Binary string
	// Args are its command-line arguments, without the program name.
	Args []string
	// Env is its environment; nil: this program's.
	Env []string
	// LogPath is the file its stdout and stderr are appended to, after a
	// header line; it is created if needed.
	LogPath string
}

// Process is one run of a program started by Start.
type Process struct {
	spec    Spec
	cmd     *exec.Cmd
	pid     int
	started time.Time
	done    chan struct{} // closed once the process has been reaped
	state   *os.ProcessState
	// expected is set before the owner ends the process, so that its exit
	// is not taken for a crash.
	expected atomic.Bool
}

// Start starts s.Binary with Spawn (it dies with this program) and a
// goroutine that reaps it; it does not wait for the process to serve (see
// WaitReady).
func Start(s Spec) (*Process, error) {
	if s.Name == "" {
		s.Name = filepath.Base(s.Binary)
	}
	logFile, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// The child keeps its own copy of the descriptor.
	defer logFile.Close()
	fmt.Fprintf(logFile, "=== %s: %s: starting %s %s\n", s.Name,
		time.Now().Format(time.RFC3339Nano), s.Binary, strings.Join(s.Args, " "))

	cmd := exec.Command(s.Binary, s.Args...)
	cmd.Env = s.Env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := Spawn(cmd); err != nil {
		return nil, err
	}
	p := &Process{spec: s, cmd: cmd, pid: cmd.Process.Pid, started: time.Now(), done: make(chan struct{})}
	go func() {
		cmd.Wait() // the exit status is read from state
		p.state = cmd.ProcessState
		close(p.done)
	}()
	return p, nil
}

// Name is Spec.Name.
func (p *Process) Name() string { return p.spec.Name }

// PID is the process id; it stays set after the process exits.
func (p *Process) PID() int { return p.pid }

// Started is when Start started the process.
func (p *Process) Started() time.Time { return p.started }

// LogTail returns the last lines of the process's log file.
func (p *Process) LogTail(lines int) string { return TailFile(p.spec.LogPath, lines) }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited and been reaped.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// State is the exit status once reaped, or nil.
func (p *Process) State() *os.ProcessState {
	if !p.Exited() {
		return nil
	}
	return p.state
}

// ExitDescription is the exit status once reaped, or "running".
func (p *Process) ExitDescription() string {
	if !p.Exited() {
		return "running"
	}
	return p.state.String()
}

// Expect records that the owner is about to end the process (Kill and
// Stop call it), so that its exit is not reported as a crash.
func (p *Process) Expect() { p.expected.Store(true) }

// Expected reports whether Expect was called.
func (p *Process) Expected() bool { return p.expected.Load() }

// Signal sends sig unless the process has already been reaped; then it
// returns ErrNotRunning.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return ErrNotRunning
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		if p.Exited() || errors.Is(err, os.ErrProcessDone) {
			return ErrNotRunning
		}
		return err
	}
	return nil
}

// WaitFor reports whether the process was reaped within d.
func (p *Process) WaitFor(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// Kill sends SIGKILL and waits up to ReapTimeout until the process is
// reaped.
func (p *Process) Kill() error {
	p.Expect()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill pid %d: %w", p.pid, err)
	}
	if !p.WaitFor(ReapTimeout) {
		return fmt.Errorf("pid %d not reaped %v after SIGKILL", p.pid, ReapTimeout)
	}
	return nil
}

// Stop sends SIGCONT (in case it is paused) and SIGTERM, waits up to
// grace, then sends SIGKILL and waits up to ReapTimeout. It reports
// whether SIGKILL was needed.
func (p *Process) Stop(grace time.Duration) (killed bool) {
	p.Expect()
	p.Signal(syscall.SIGCONT)
	p.Signal(syscall.SIGTERM)
	if p.WaitFor(grace) {
		return false
	}
	p.Signal(syscall.SIGKILL)
	p.WaitFor(ReapTimeout)
	return true
}

// WaitReady polls cond (see poll.Until) until it returns nil or ctx ends.
// It gives up early if the process exits, with an error that wraps
// ErrExited and holds the tail of the log.
func (p *Process) WaitReady(ctx context.Context, cond func(ctx context.Context) error) error {
	ctx, cancelExit := context.WithCancelCause(ctx)
	defer cancelExit(nil)
	go func() {
		select {
		case <-p.done:
			cancelExit(ErrExited)
		case <-ctx.Done():
		}
	}()
	err := poll.Until(ctx, cond)
	if err == nil {
		return nil
	}
	if errors.Is(context.Cause(ctx), ErrExited) {
		return fmt.Errorf("pid %d: %w during start-up (%v); log tail:\n%s",
			p.pid, ErrExited, p.ExitDescription(), p.LogTail(20))
	}
	return fmt.Errorf("pid %d not ready: %w", p.pid, err)
}

// TailFile returns the last n lines of the file at path, reading at most
// its last 512 KiB.
func TailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	const maxRead = 512 << 10
	if info, err := f.Stat(); err == nil && info.Size() > maxRead {
		f.Seek(info.Size()-maxRead, io.SeekStart)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	data = bytes.TrimRight(data, "\n")
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
