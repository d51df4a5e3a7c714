package harness

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// On Linux a child started with Pdeathsig gets that signal when the thread
// that forked it exits, not when the process does. Go may retire threads, so
// every node is forked from one goroutine that is locked to its OS thread and
// never returns: the thread, and with it every node, lives exactly as long as
// the test binary.

type spawnRequest struct {
	cmd    *exec.Cmd
	result chan<- error
}

var spawner struct {
	once     sync.Once
	requests chan spawnRequest
}

// spawnerFunction is the function the spawner goroutine runs, for leak
// checkers (see LeakOptions).
const spawnerFunction = "github.com/regcenter/registry/integration/harness.spawnLoop"

// spawn starts cmd so that the kernel kills it with SIGKILL when the test
// binary exits.
func spawn(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.requests = make(chan spawnRequest)
		go spawnLoop(spawner.requests)
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	result := make(chan error, 1)
	spawner.requests <- spawnRequest{cmd: cmd, result: result}
	return <-result
}

// spawnLoop never unlocks its thread and never returns (see above).
func spawnLoop(requests <-chan spawnRequest) {
	runtime.LockOSThread()
	for req := range requests {
		req.result <- req.cmd.Start()
	}
}
