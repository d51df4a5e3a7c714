package proc

import (
	"fmt"
	"sync"
)

// Slot holds the current process of something that runs one process at a
// time, such as a node restarted with the same flags and data. Its zero
// value is empty and ready to use; it is safe for concurrent use.
type Slot struct {
	mu  sync.Mutex
	cur *Process // the current or last process; nil before the first Start
}

// Start starts a process from spec (see Start) unless the current one is
// still alive; then it returns an error that wraps ErrAlreadyRunning.
func (s *Slot) Start(spec Spec) (*Process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && !s.cur.Exited() {
		return nil, fmt.Errorf("%w (pid %d)", ErrAlreadyRunning, s.cur.PID())
	}
	p, err := Start(spec)
	if err != nil {
		return nil, err
	}
	s.cur = p
	return p, nil
}

// Current is the current or last process, or nil before the first Start.
func (s *Slot) Current() *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Live returns the current process if it has not exited, or an error that
// wraps ErrNotRunning.
func (s *Slot) Live() (*Process, error) {
	p := s.Current()
	if p == nil || p.Exited() {
		return nil, ErrNotRunning
	}
	return p, nil
}

// PID is the pid of the live process, or 0 if there is none.
func (s *Slot) PID() int {
	if p, err := s.Live(); err == nil {
		return p.PID()
	}
	return 0
}
