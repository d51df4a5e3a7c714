package harness

import (
	"errors"

	"github.com/regcenter/registry/internal/proc"
)

// Sentinel errors returned by Node and Cluster methods. Compare with errors.Is.
var (
	// ErrNotRunning: the node has no live process (never started, exited,
	// killed or stopped).
	ErrNotRunning = proc.ErrNotRunning
	// ErrAlreadyRunning: Restart was called while the node's process is
	// still alive; kill or stop it first.
	ErrAlreadyRunning = proc.ErrAlreadyRunning
	// ErrExited: a process exited while the harness waited for it to become
	// ready.
	ErrExited = proc.ErrExited
	// ErrStopTimeout: a process did not exit within Options.StopTimeout after
	// SIGTERM and was killed with SIGKILL.
	ErrStopTimeout = errors.New("harness: node did not stop in time")
	// ErrNoSpareSlot: AddNode found every port slot taken; start the
	// cluster with a larger Options.Spare.
	ErrNoSpareSlot = errors.New("harness: no spare port slot")
	// ErrUncleanExit: a gracefully stopped process exited with a non-zero
	// status.
	ErrUncleanExit = errors.New("harness: node exited with a non-zero status")
)
