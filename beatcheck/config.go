package beatcheck

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/regcenter/registry/internal/defaults"
)

// Config tunes the checker. DefaultConfig documents the defaults.
type Config struct {
	// SweepInterval is how often the checker looks for missed beats. It is
	// the slack in every detection bound. Default 100ms.
	SweepInterval time.Duration
	// FailoverGrace is what a new leader (or a leader whose wall clock
	// jumped) adds, besides one beat interval of the instance's own, before
	// an instance may be suspected or removed: the time its client needs to
	// find the new leader and the clock skew the cluster tolerates. Default
	// 2s: a client's failover (its backoff, 250ms by default, up to
	// 1s configured) plus 1s of skew.
	FailoverGrace time.Duration
	// StallFactor: a gap between sweeps longer than StallFactor ×
	// SweepInterval is a stall. Default 3.
	StallFactor int
	// ClockJumpThreshold: a difference this large between the wall clock's
	// and the monotonic clock's progress over one sweep is a clock jump.
	// Default 1s.
	ClockJumpThreshold time.Duration
	// MaxExpiriesPerSweep caps the expiries of one sweep. Default 1,000.
	MaxExpiriesPerSweep int
	// MaxSuspectsPerSweep caps the SUSPECT marks of one sweep. Default 10,000.
	MaxSuspectsPerSweep int
	// GuardShare and GuardMinCount: the mass-expiry guard engages when the
	// silent instances (no beat for their suspect_after, whether due to
	// expire yet or not) plus those this leader expired in the last
	// GuardWindow exceed both GuardShare of (live + expired in the window)
	// and GuardMinCount. Defaults 0.3, 10 and 30s.
	GuardShare    float64
	GuardMinCount int
	GuardWindow   time.Duration
	// Clock is the wall clock used for deadlines and command timestamps.
	// Default time.Now. Stalls are measured on the monotonic clock.
	Clock func() time.Time
	// Backlog returns how long ago this node received the oldest beat it
	// has not applied yet (zero: none waits). A sweep judges deadlines
	// that much earlier than its clock says: an instance whose beat
	// reached the leader in time is not suspected or removed because the
	// leader was slow to commit it. Default: no backlog.
	Backlog func() time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		SweepInterval:       100 * time.Millisecond,
		FailoverGrace:       2 * time.Second,
		StallFactor:         3,
		ClockJumpThreshold:  time.Second,
		MaxExpiriesPerSweep: 1000,
		MaxSuspectsPerSweep: 10_000,
		GuardShare:          0.3,
		GuardMinCount:       10,
		GuardWindow:         30 * time.Second,
		Clock:               time.Now,
		Backlog:             func() time.Duration { return 0 },
		Logger:              slog.New(slog.DiscardHandler),
	}
}

// WithDefaults returns c with each zero field set to its default.
func (c Config) WithDefaults() Config {
	defaults.Fill(&c, DefaultConfig())
	return c
}

// Validate names the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.SweepInterval < time.Millisecond:
		return fmt.Errorf("beatcheck: SweepInterval is %v, the minimum is 1ms", c.SweepInterval)
	case c.FailoverGrace < 0:
		return fmt.Errorf("beatcheck: FailoverGrace is negative (%v)", c.FailoverGrace)
	case c.StallFactor < 2:
		return fmt.Errorf("beatcheck: StallFactor is %d, the minimum is 2", c.StallFactor)
	case c.ClockJumpThreshold < c.SweepInterval:
		return fmt.Errorf("beatcheck: ClockJumpThreshold (%v) is below SweepInterval (%v)", c.ClockJumpThreshold, c.SweepInterval)
	case c.MaxExpiriesPerSweep < 1 || c.MaxSuspectsPerSweep < 1:
		return fmt.Errorf("beatcheck: MaxExpiriesPerSweep (%d) and MaxSuspectsPerSweep (%d) must be at least 1", c.MaxExpiriesPerSweep, c.MaxSuspectsPerSweep)
	case c.GuardShare <= 0 || c.GuardShare > 1:
		return fmt.Errorf("beatcheck: GuardShare is %v, it must be in (0, 1]", c.GuardShare)
	case c.GuardMinCount < 0:
		return fmt.Errorf("beatcheck: GuardMinCount is negative (%d)", c.GuardMinCount)
	case c.GuardWindow < c.SweepInterval:
		return fmt.Errorf("beatcheck: GuardWindow (%v) is below SweepInterval (%v)", c.GuardWindow, c.SweepInterval)
	}
	return nil
}
