//go:build !linux

package proc

import "os/exec"

// SpawnerFunction: there is no spawner goroutine outside Linux.
const SpawnerFunction = ""

// Spawn starts cmd. Outside Linux there is no parent-death signal, so only
// an orderly stop ends a child.
func Spawn(cmd *exec.Cmd) error { return cmd.Start() }
