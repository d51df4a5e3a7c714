//go:build !linux

package harness

import "os/exec"

// spawnerFunction: there is no spawner goroutine outside Linux.
const spawnerFunction = ""

// spawn starts cmd. Outside Linux there is no parent-death signal, so only
// the t.Cleanup stops a node.
func spawn(cmd *exec.Cmd) error { return cmd.Start() }
