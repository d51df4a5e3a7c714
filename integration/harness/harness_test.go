package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/internal/proc"
)

// These tests run the harness against testdata/fakenode, which answers
// Cluster.Status like a healthy cluster with n1 as leader, so that they do
// not depend on registry-node.

var fake struct {
	once      sync.Once
	dir, path string
	err       error
}

// fakeNode builds testdata/fakenode once per test binary.
func fakeNode(t *testing.T) string {
	t.Helper()
	if path := os.Getenv(helperBinaryEnv); path != "" {
		return path
	}
	fake.once.Do(func() {
		fake.dir, fake.path, fake.err = proc.Build(context.Background(), "./integration/harness/testdata/fakenode", "fakenode")
	})
	if fake.err != nil {
		t.Fatal(fake.err)
	}
	return fake.path
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, append(LeakOptions(), goleak.Cleanup(func(code int) {
		if fake.dir != "" {
			os.RemoveAll(fake.dir)
		}
		RemoveBuild()
		os.Exit(code)
	}))...)
}

func TestNodeLifecycle(t *testing.T) {
	c := Start(t, Options{Binary: fakeNode(t)})
	ctx := t.Context()
	n1, n2 := c.Node("n1"), c.Node("n2")

	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if leader != n1 || c.Leader() != n1 {
		t.Fatalf("WaitLeader = %v, Leader = %v; want n1", leader, c.Leader())
	}
	if got := ids(c.Followers()); !slices.Equal(got, []string{"n2", "n3"}) {
		t.Errorf("Followers = %v, want [n2 n3]", got)
	}

	pid := n2.PID()
	if err := n2.Pause(); err != nil {
		t.Fatal(err)
	}
	if !n2.Paused() || n2.Running() || !n2.Alive() || n2.PID() != pid {
		t.Errorf("paused n2: Paused %v, Running %v, Alive %v, PID %d (was %d)", n2.Paused(), n2.Running(), n2.Alive(), n2.PID(), pid)
	}
	if got := ids(c.Running()); !slices.Equal(got, []string{"n1", "n3"}) {
		t.Errorf("Running with n2 paused = %v, want [n1 n3]", got)
	}
	if _, err := c.WaitLeader(ctx); err != nil {
		t.Errorf("WaitLeader with n2 paused: %v", err)
	}
	if err := n2.Resume(); err != nil {
		t.Fatal(err)
	}
	if !n2.Running() {
		t.Error("resumed n2 is not running")
	}

	if err := n2.Kill(); err != nil {
		t.Fatal(err)
	}
	if n2.Alive() || n2.PID() != 0 {
		t.Errorf("killed n2: Alive %v, PID %d", n2.Alive(), n2.PID())
	}
	if ws, ok := n2.ExitState().Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Errorf("killed n2 exit state: %v, want killed by SIGKILL", n2.ExitState())
	}
	if err := n2.Kill(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Kill of a dead node: %v, want ErrNotRunning", err)
	}

	if err := n2.Restart(); err != nil {
		t.Fatal(err)
	}
	if n2.PID() == 0 || n2.PID() == pid {
		t.Errorf("restarted n2 has pid %d (was %d)", n2.PID(), pid)
	}
	if err := n2.Restart(); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("Restart of a running node: %v, want ErrAlreadyRunning", err)
	}
	if err := n2.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if code := n2.ExitState().ExitCode(); code != 0 {
		t.Errorf("gracefully stopped n2 exited with %d", code)
	}
	if !strings.Contains(n2.LogTail(10), "fakenode n2: serving") {
		t.Errorf("n2's log does not hold its output:\n%s", n2.LogTail(10))
	}
}

func TestStopKillsANodeThatIgnoresSIGTERM(t *testing.T) {
	c := Start(t, Options{
		Binary:      fakeNode(t),
		Nodes:       1,
		ExtraArgs:   []string{"--fake-ignore-sigterm"},
		StopTimeout: 300 * time.Millisecond,
	})
	n := c.Node("n1")
	if err := n.Stop(); !errors.Is(err, ErrStopTimeout) {
		t.Errorf("Stop: %v, want ErrStopTimeout", err)
	}
	if n.Alive() {
		t.Error("node still alive after Stop")
	}
}

func TestWaitReadyReportsAStartUpFailure(t *testing.T) {
	c := Start(t, Options{
		Binary:              fakeNode(t),
		Nodes:               1,
		ExtraArgs:           []string{"--fake-exit-code=2"},
		SkipReady:           true,
		AllowUnexpectedExit: true,
	})
	err := c.Node("n1").WaitReady(t.Context())
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "exiting as asked") {
		t.Errorf("WaitReady: %v, want ErrExited with the log tail", err)
	}
}

// helperEnv selects the helper mode of the test binary; helperBinaryEnv
// passes it the fake node.
const (
	helperEnv       = "HARNESS_TEST_HELPER"
	helperBinaryEnv = BinaryEnv
)

func TestNoProcessOutlivesItsTest(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux-only")
	}
	binary := fakeNode(t)

	t.Run("test ends with a paused node", func(t *testing.T) {
		var pids []int
		t.Run("cluster", func(t *testing.T) {
			c := Start(t, Options{Binary: binary})
			if err := c.Node("n2").Pause(); err != nil {
				t.Fatal(err)
			}
			for _, n := range c.Nodes() {
				pids = append(pids, n.PID())
			}
		})
		for _, pid := range pids {
			if !processGone(pid) {
				t.Errorf("pid %d outlived its test", pid)
			}
		}
	})

	t.Run("test binary panics in a goroutine", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperPanicsWithACluster$", "-test.v")
		cmd.Env = append(os.Environ(), helperEnv+"=panic", helperBinaryEnv+"="+binary)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("helper did not panic:\n%s", out)
		}
		pids := helperPIDs(out)
		if len(pids) != 3 {
			t.Fatalf("helper reported pids %v, want 3:\n%s", pids, out)
		}
		poll.Eventually(t, 10*time.Second, func(context.Context) error {
			for _, pid := range pids {
				if !processGone(pid) {
					return fmt.Errorf("pid %d outlives the test binary that started it", pid)
				}
			}
			return nil
		})
	})
}

// TestHelperPanicsWithACluster is run by TestNoProcessOutlivesItsTest in a
// child test binary: it starts a cluster, prints the pids and panics in a
// goroutine, so that no cleanup runs.
func TestHelperPanicsWithACluster(t *testing.T) {
	if os.Getenv(helperEnv) != "panic" {
		t.Skip("helper for TestNoProcessOutlivesItsTest")
	}
	c := Start(t, Options{Binary: fakeNode(t)})
	for _, n := range c.Nodes() {
		fmt.Printf("HELPER-PID %d\n", n.PID())
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		panic("helper: dying without cleanup")
	}()
	<-done
}

func helperPIDs(out []byte) []int {
	var pids []int
	for line := range bytes.Lines(out) {
		if rest, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("HELPER-PID ")); ok {
			if pid, err := strconv.Atoi(string(rest)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// processGone reports whether pid is no longer a live process: absent, or a
// zombie nobody reaped yet.
func processGone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	return stat[i+2] == 'Z' || stat[i+2] == 'X'
}

func ids(nodes []*Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.ID())
	}
	return out
}
