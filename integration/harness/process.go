package harness

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// process is one run of the node binary: Node.Restart makes a new one with
// the same flags. The harness signals it only through its *os.Process (a
// pidfd on Linux), never by name, so a recycled pid is never hit.
type process struct {
	node  string // the node id
	cmd   *exec.Cmd
	pid   int
	start time.Time
	done  chan struct{} // closed once the process has been reaped
	state *os.ProcessState
	// expected is set before the harness signals the process, so that its
	// exit is not reported as a crash.
	expected atomic.Bool
}

// startProcess starts binary for node with args and env, appending its
// stdout and stderr to logPath after a header line.
func startProcess(node, binary string, args, env []string, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// The child keeps its own copy of the descriptor.
	defer logFile.Close()
	fmt.Fprintf(logFile, "=== harness: %s: starting %s %s\n",
		time.Now().Format(time.RFC3339Nano), binary, strings.Join(args, " "))

	cmd := exec.Command(binary, args...)
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := spawn(cmd); err != nil {
		return nil, err
	}
	p := &process{node: node, cmd: cmd, pid: cmd.Process.Pid, start: time.Now(), done: make(chan struct{})}
	go func() {
		cmd.Wait() // the exit status is read from state
		p.state = cmd.ProcessState
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig unless the process has already been reaped.
func (p *process) signal(sig syscall.Signal) error {
	if p.exited() {
		return ErrNotRunning
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		if p.exited() || err == os.ErrProcessDone {
			return ErrNotRunning
		}
		return err
	}
	return nil
}

// waitFor reports whether the process was reaped within d.
func (p *process) waitFor(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// exitDescription is the exit status once reaped, or "running".
func (p *process) exitDescription() string {
	if !p.exited() {
		return "running"
	}
	return p.state.String()
}

// stop sends SIGCONT (in case it is paused) and SIGTERM, waits up to grace,
// then sends SIGKILL. It reports whether SIGKILL was needed.
func (p *process) stop(grace time.Duration) (killed bool) {
	p.expected.Store(true)
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGTERM)
	if p.waitFor(grace) {
		return false
	}
	p.signal(syscall.SIGKILL)
	p.waitFor(reapTimeout)
	return true
}

// reapTimeout bounds the wait for a SIGKILLed process to be reaped.
const reapTimeout = 10 * time.Second

// tailFile returns the last n lines of the file at path, reading at most its
// last 512 KiB.
func tailFile(path string, n int) string {
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
