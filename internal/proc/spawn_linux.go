package proc

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

type spawnRequest struct {
	cmd    *exec.Cmd
	result chan<- error
}

var spawner struct {
	once     sync.Once
	requests chan spawnRequest
}

// SpawnerFunction is the function the spawner goroutine runs, for leak
// checkers (goleak.IgnoreAnyFunction); empty where there is none.
const SpawnerFunction = "github.com/regcenter/registry/internal/proc.spawnLoop"

// Spawn starts cmd so that the kernel kills it with SIGKILL when this
// program exits (see the package documentation). It sets
// cmd.SysProcAttr.Pdeathsig and keeps the rest of cmd.SysProcAttr.
func Spawn(cmd *exec.Cmd) error {
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

// spawnLoop never unlocks its thread and never returns: the thread, and
// with it the parent-death signal of every child, lives as long as the
// program.
func spawnLoop(requests <-chan spawnRequest) {
	runtime.LockOSThread()
	for req := range requests {
		req.result <- req.cmd.Start()
	}
}
