package proc

import "errors"

// Sentinel errors of Process and Slot methods. Compare with errors.Is.
var (
	// ErrNotRunning: the process has already exited (and been reaped).
	ErrNotRunning = errors.New("process is not running")
	// ErrExited: the process exited while WaitReady waited for it.
	ErrExited = errors.New("process exited")
	// ErrAlreadyRunning: Slot.Start was called while the slot's process
	// is still alive; kill or stop it first.
	ErrAlreadyRunning = errors.New("process is already running")
)
