package proc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	var opts []goleak.Option
	if SpawnerFunction != "" {
		opts = append(opts, goleak.IgnoreAnyFunction(SpawnerFunction))
	}
	goleak.VerifyTestMain(m, opts...)
}

// shell starts sh -c script with its output in a log file of t's.
func shell(t *testing.T, script string) *Process {
	t.Helper()
	p, err := Start(Spec{Name: "sh", Binary: "/bin/sh", Args: []string{"-c", script},
		LogPath: filepath.Join(t.TempDir(), "sh.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	return p
}

func TestStartLogsAndReaps(t *testing.T) {
	p := shell(t, "echo hello from the child; exit 3")
	if !p.WaitFor(10 * time.Second) {
		t.Fatal("not reaped within 10s")
	}
	if code := p.State().ExitCode(); code != 3 {
		t.Errorf("exit code %d, want 3", code)
	}
	tail := p.LogTail(5)
	if !strings.Contains(tail, "=== sh: ") || !strings.Contains(tail, "hello from the child") {
		t.Errorf("log tail %q, want the header and the child's output", tail)
	}
	if err := p.Signal(0); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Signal after exit = %v, want ErrNotRunning", err)
	}
}

func TestKillAndStop(t *testing.T) {
	p := shell(t, "exec sleep 60")
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() || !p.Expected() {
		t.Errorf("after Kill: exited %v, expected %v; want both", p.Exited(), p.Expected())
	}

	// sh ignores SIGTERM here, so Stop has to kill it. (The log's header
	// holds the script, so the marker is one only the shell's output has.)
	q := shell(t, "trap '' TERM; echo trapped-$((1+1)); while :; do sleep 0.05; done")
	err := q.WaitReady(t.Context(), func(context.Context) error {
		if !strings.Contains(q.LogTail(1), "trapped-2") {
			return errors.New("no trap yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !q.Stop(100 * time.Millisecond) {
		t.Error("Stop did not report the SIGKILL it needed")
	}
	if !q.Exited() {
		t.Error("still running after Stop")
	}
}

func TestSpawnSetsThePdeathsig(t *testing.T) {
	p := shell(t, "exec sleep 60")
	if p.cmd.SysProcAttr == nil || (SpawnerFunction != "" && p.cmd.SysProcAttr.Pdeathsig == 0) {
		t.Fatalf("SysProcAttr %+v, want a parent-death signal", p.cmd.SysProcAttr)
	}
}

func TestWaitReadyFailsEarlyWhenTheProcessExits(t *testing.T) {
	p := shell(t, "echo cannot bind; exit 1")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	begin := time.Now()
	err := p.WaitReady(ctx, func(context.Context) error { return errors.New("not serving") })
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "cannot bind") {
		t.Fatalf("WaitReady = %v, want ErrExited with the log tail", err)
	}
	if d := time.Since(begin); d > 30*time.Second {
		t.Errorf("WaitReady took %v, want it to give up when the process exits", d)
	}
}

func TestWaitReady(t *testing.T) {
	p := shell(t, "exec sleep 60")
	ready := filepath.Join(t.TempDir(), "ready")
	go os.WriteFile(ready, nil, 0o644)
	err := p.WaitReady(t.Context(), func(context.Context) error {
		_, err := os.Stat(ready)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSlotRunsOneProcessAtATime(t *testing.T) {
	var s Slot
	if s.PID() != 0 || s.Current() != nil {
		t.Fatal("an empty slot has a process")
	}
	if _, err := s.Live(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Live on an empty slot = %v, want ErrNotRunning", err)
	}
	spec := Spec{Binary: "/bin/sh", Args: []string{"-c", "exec sleep 60"}, LogPath: filepath.Join(t.TempDir(), "log")}
	p, err := s.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Current().Kill() })
	if s.PID() != p.PID() {
		t.Errorf("PID %d, want %d", s.PID(), p.PID())
	}
	if _, err := s.Start(spec); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Start = %v, want ErrAlreadyRunning", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if s.PID() != 0 || s.Current() != p {
		t.Errorf("after Kill: PID %d, Current %v; want 0 and the killed process", s.PID(), s.Current())
	}
	q, err := s.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	if q == p || s.PID() != q.PID() {
		t.Errorf("restart: got the same process or the wrong pid")
	}
}
