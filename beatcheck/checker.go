package beatcheck

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
)

// State is the replica the checker reads. *fsm.FSM implements it.
type State interface {
	// ScanInstances calls fn for every instance under the replica's read
	// lock, which it may release between groups of instances (see
	// fsm.FSM.ScanInstances: an instance moved by a concurrent removal may
	// be missed until the next sweep); fn must not block nor keep the
	// pointer. Every proposal is conditional, so a sweep needs no
	// point-in-time view.
	ScanInstances(fn func(*fsm.Instance))
}

// DueState is a State that can skip instances no sweep would act on.
// *fsm.FSM implements it; a sweep of a State that does uses it.
type DueState interface {
	State
	// ScanDue calls fn, as ScanInstances does, for every instance with
	// LastBeatAt + min(SuspectAfter, TTL) <= now (Unix ns), and perhaps
	// for others: classify keeps every instance it leaves out.
	ScanDue(now int64, fn func(*fsm.Instance))
	// InstanceCount returns the number of instances.
	InstanceCount() int
}

// Proposer proposes through the local Raft only. The node implements it.
type Proposer interface {
	fsm.Proposer
	// VerifyLeader confirms with a quorum that this node still leads.
	VerifyLeader(ctx context.Context) error
}

// Status is what the checker last did, for Cluster.Status and metrics.
type Status struct {
	// Running: this node leads and its checker runs.
	Running bool
	// GuardEngaged: the mass-expiry guard holds expiries back.
	GuardEngaged bool
	// Held is the number of expiries the guard held at the last sweep.
	Held int
	// Released: an operator released the guard; it stays released until
	// the guard clears by itself.
	Released bool
	// FenceRemaining is how long the failover or stall fence still holds
	// for an instance with a zero beat interval.
	FenceRemaining time.Duration
	// Suspected and Expired count the entries this node proposed that the
	// fsm applied, since the node started.
	Suspected, Expired uint64
}

// Checker proposes SUSPECT marks and expiries for missed beats while its
// node leads. One Checker serves every term of its node; Run runs once per
// term.
type Checker struct {
	cfg      Config
	state    State
	proposer Proposer
	rng      *rand.Rand // used by Run's goroutine only

	mu     sync.Mutex
	status Status
	// graceAt is when GrantGrace was last called and not yet taken by Run.
	graceAt time.Time
}

// New returns a Checker; zero fields of cfg take the defaults.
func New(cfg Config, state State, proposer Proposer) (*Checker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Checker{
		cfg:      cfg,
		state:    state,
		proposer: proposer,
		rng:      rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}, nil
}

// Status returns the checker's state.
func (c *Checker) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Release lets the held expiries go: the guard stays released until it
// clears by itself. It has no effect when the guard is not engaged.
func (c *Checker) Release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status.GuardEngaged {
		c.status.Released = true
		c.cfg.Logger.Warn("expiry guard released by an operator", "held", c.status.Held)
	}
}

// GrantGrace makes a running checker grant the failover grace again, from
// now, as on a promotion: no instance is suspected or removed before now +
// FailoverGrace + its own beat interval. The node calls it when the fsm
// restores a snapshot, whose instances carry the last-beat timestamps of the
// time it was taken: without the grace, a restored backup would expire at
// once. A checker that is not running ignores it (a promotion grants the
// grace anyway).
func (c *Checker) GrantGrace() {
	now := c.cfg.Clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status.Running {
		c.graceAt = now
	}
}

// takeGrace returns the time of the pending GrantGrace, or the zero time.
func (c *Checker) takeGrace() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := c.graceAt
	c.graceAt = time.Time{}
	return at
}

// Run sweeps every SweepInterval until ctx ends or leadership is lost.
// promotedAt is when this node became leader (after its barrier), by
// Config.Clock.
func (c *Checker) Run(ctx context.Context, promotedAt time.Time) {
	log := c.cfg.Logger
	c.update(func(s *Status) { s.Running, s.GuardEngaged, s.Held, s.Released = true, false, 0, false })
	c.takeGrace() // promotedAt grants it
	defer c.update(func(s *Status) { s.Running, s.FenceRemaining = false, 0 })

	f := fences{graceFrom: promotedAt}
	var window expiryWindow
	ticker := time.NewTicker(c.cfg.SweepInterval)
	defer ticker.Stop()
	lastMono, lastWall := time.Now(), c.cfg.Clock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		mono, now := time.Now(), c.cfg.Clock()
		monoGap, wallGap := mono.Sub(lastMono), now.Round(0).Sub(lastWall.Round(0))
		lastMono, lastWall = mono, now
		if monoGap > time.Duration(c.cfg.StallFactor)*c.cfg.SweepInterval {
			// Beats may have waited behind the stall: let them land first,
			// and make sure this node still leads before acting.
			f.stallUntil = later(f.stallUntil, now.Add(monoGap))
			log.Warn("checker stalled; extending deadlines", "gap", monoGap.String())
			if err := c.proposer.VerifyLeader(ctx); err != nil {
				log.Info("not leader after a stall; checker stops", "error", err)
				return
			}
		}
		if d := wallGap - monoGap; d > c.cfg.ClockJumpThreshold || d < -c.cfg.ClockJumpThreshold {
			f.graceFrom = now
			log.Warn("wall clock jumped; granting the failover grace again", "jump", d.String())
		}
		if at := c.takeGrace(); !at.IsZero() {
			f.graceFrom = later(f.graceFrom, at)
			log.Info("state restored from a snapshot; granting the failover grace again")
		}
		if err := c.sweep(ctx, now, f, &window); err != nil {
			if stopQuietly(err) || ctx.Err() != nil {
				return
			}
			log.Warn("sweep failed", "error", err)
		}
	}
}

// stopQuietly reports errors that mean this node no longer leads.
func stopQuietly(err error) bool { return errors.Is(err, fsm.ErrLeadershipLost) }

func (c *Checker) update(fn func(*Status)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(&c.status)
}

// sweep finds the instances past their deadlines and proposes what the
// plan says.
func (c *Checker) sweep(ctx context.Context, now time.Time, f fences, window *expiryWindow) error {
	// Read before the scan: a beat that waited then and was applied since
	// shows in the scan; one that waits still is judged by when it came.
	judged := now
	if b := c.cfg.Backlog(); b > 0 {
		judged = now.Add(-b)
	}
	fd := find(c.state, f.clock(judged, c.cfg.FailoverGrace))
	toSuspect, toExpire, silent, live := fd.toSuspect, fd.toExpire, fd.silent, fd.live
	window.trim(now, c.cfg.GuardWindow)
	released := c.Status().Released
	p := makePlan(toSuspect, toExpire, silent, live, window.total, released, &c.cfg, c.rng)

	c.update(func(s *Status) {
		if p.guard != s.GuardEngaged {
			if p.guard {
				c.cfg.Logger.Warn("expiry guard engaged: holding expiries, marking instances SUSPECT",
					"silent", silent, "due", len(toExpire), "expired_in_window", window.total, "live", live)
			} else {
				c.cfg.Logger.Info("expiry guard cleared", "live", live)
			}
		}
		s.GuardEngaged, s.Held = p.guard, p.held
		if !p.guard {
			s.Released = false
		}
		s.FenceRemaining = max(0, f.fence(&fsm.Instance{}, c.cfg.FailoverGrace).Sub(now))
	})

	if len(p.suspect) > 0 {
		res, err := fsm.Propose[*fsm.ConditionalResult](ctx, c.proposer, &fsmpb.MarkSuspect{Entries: p.suspect, NowUnixNs: now.UnixNano()})
		if err != nil {
			return err
		}
		c.update(func(s *Status) { s.Suspected += uint64(res.Applied) })
	}
	if len(p.expire) > 0 {
		res, err := fsm.Propose[*fsm.ConditionalResult](ctx, c.proposer, &fsmpb.Expire{Entries: p.expire, NowUnixNs: now.UnixNano()})
		if err != nil {
			return err
		}
		window.add(now, res.Applied)
		c.update(func(s *Status) { s.Expired += uint64(res.Applied) })
		c.cfg.Logger.Info("expired instances", "count", res.Applied, "skipped", res.Skipped, "index", res.Index)
	}
	return nil
}

// findings are what one sweep's scan found: the HEALTHY instances past
// their suspect deadline, those past their TTL deadline, the number of
// silent instances and of live ones (every instance).
type findings struct {
	toSuspect, toExpire []due
	silent, live        int
}

// find classifies the instances of state at clock. A DueState scans only
// the chunks holding due instances and counts the live ones apart: the
// instances it leaves out are not due, which classify keeps.
func find(state State, clock sweepClock) findings {
	var fd findings
	visit := func(in *fsm.Instance) {
		v := clock.classify(in)
		if v == keep {
			return
		}
		fd.silent++
		if v == quiet {
			return
		}
		d := due{
			cond:    &fsmpb.Condition{Service: in.Service, Id: in.ID, Incarnation: in.Incarnation, LastBeatIndex: in.LastBeatIndex},
			healthy: in.State == fsm.StateHealthy,
		}
		if v == expire {
			fd.toExpire = append(fd.toExpire, d)
		} else {
			fd.toSuspect = append(fd.toSuspect, d)
		}
	}
	if ds, ok := state.(DueState); ok {
		fd.live = ds.InstanceCount()
		ds.ScanDue(clock.now, visit)
		return fd
	}
	state.ScanInstances(func(in *fsm.Instance) {
		fd.live++
		visit(in)
	})
	return fd
}

// expiryWindow counts this leader's expiries over the guard window.
type expiryWindow struct {
	at    []time.Time
	n     []int
	total int
}

func (w *expiryWindow) add(now time.Time, n int) {
	if n > 0 {
		w.at, w.n = append(w.at, now), append(w.n, n)
		w.total += n
	}
}

func (w *expiryWindow) trim(now time.Time, window time.Duration) {
	i := 0
	for i < len(w.at) && now.Sub(w.at[i]) > window {
		w.total -= w.n[i]
		i++
	}
	w.at, w.n = w.at[i:], w.n[i:]
}
