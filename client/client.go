package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("client: closed")

// Client registers instances and keeps them alive, and discovers and
// watches services. It is safe for concurrent use. Close it when done.
type Client struct {
	cfg   Config
	log   *slog.Logger
	creds credentials.TransportCredentials // TLS or plaintext, from cfg

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn
	current string // the endpoint calls and the beat stream use now
	// readCurrent is the read endpoint discovery uses now, when
	// Config.ReadEndpoints is set (otherwise reads use current).
	readCurrent string
	rng         *rand.Rand
	caches      map[string]*cache
	writes      map[string]uint64 // service → Raft index of this client's last write to it
	closed      bool

	// nextWatch picks the endpoint of the read pool the next watch starts
	// on (see watchEndpoint); it starts at random so that clients spread.
	nextWatch int

	muxes watchMuxes // the WatchMany stream of each endpoint (watchmux.go)

	beats *beater
}

// New returns a Client. It does not dial: connections are made on first
// use, to an endpoint chosen at random.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	creds, err := cfg.transportCredentials()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:    cfg,
		creds:  creds,
		log:    cfg.Logger,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[string]*grpc.ClientConn),
		rng:    rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		caches: make(map[string]*cache),
		writes: make(map[string]uint64),
	}
	c.current = cfg.Endpoints[c.rng.IntN(len(cfg.Endpoints))]
	if len(cfg.ReadEndpoints) > 0 {
		c.readCurrent = cfg.ReadEndpoints[c.rng.IntN(len(cfg.ReadEndpoints))]
	}
	readPool, _ := c.pool(true)
	c.nextWatch = c.rng.IntN(len(readPool))
	c.beats = newBeater(c)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.beats.run(ctx)
	}()
	return c, nil
}

// Close deregisters the instances this Client registered (unless
// Config.KeepRegistrationsOnClose), stops every goroutine of the Client and
// closes its connections.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()

	var errs []error
	if !c.cfg.KeepRegistrationsOnClose {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CallTimeout)
		for _, r := range c.beats.registrations() {
			if err := r.Deregister(ctx); err != nil {
				errs = append(errs, fmt.Errorf("deregistering %s/%s: %w", r.spec.Service, r.spec.Id, err))
			}
		}
		cancel()
	}
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	for addr, cc := range c.conns {
		cc.Close()
		delete(c.conns, addr)
	}
	c.mu.Unlock()
	return errors.Join(errs...)
}

// conn returns the connection to addr, dialling it lazily.
func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed && c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(c.creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                c.cfg.KeepaliveTime,
			Timeout:             c.cfg.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: c.cfg.DialTimeout}),
	}, c.cfg.DialOptions...)
	if c.cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(c.cfg.Token)))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: endpoint %q: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// Endpoint returns the endpoint the client talks to now: its beat stream
// and its next call go there.
func (c *Client) Endpoint() string { return c.endpoint() }

// endpoint is the endpoint to use now for writes and beats.
func (c *Client) endpoint() string { return c.endpointFor(false) }

// failover moves writes and beats away from failed.
func (c *Client) failover(failed string) string { return c.failoverFor(false, failed) }

// pool returns the endpoints and the current one for reads (when
// Config.ReadEndpoints is set) or for everything else. Callers hold mu.
func (c *Client) pool(read bool) ([]string, *string) {
	if read && len(c.cfg.ReadEndpoints) > 0 {
		return c.cfg.ReadEndpoints, &c.readCurrent
	}
	return c.cfg.Endpoints, &c.current
}

// endpointFor is the endpoint to use now for a read or anything else.
func (c *Client) endpointFor(read bool) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, current := c.pool(read)
	return *current
}

// failoverFor moves away from failed to another endpoint of the same pool
// chosen at random (see other).
func (c *Client) failoverFor(read bool, failed string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, current := c.pool(read)
	if *current != failed {
		return *current // someone else already moved on
	}
	*current = c.other(read, failed)
	return *current
}

// watchEndpoint returns the endpoint a new watch starts on: the endpoints
// of the read pool in turn, so that a client's watches spread over the
// nodes instead of piling on the one its calls use.
func (c *Client) watchEndpoint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	endpoints, _ := c.pool(true)
	addr := endpoints[c.nextWatch%len(endpoints)]
	c.nextWatch = (c.nextWatch + 1) % len(endpoints)
	return addr
}

// watchFailover returns the endpoint a watch that broke on failed resumes
// on. Each watch moves on its own, so the watches of a dead node spread
// over the others.
func (c *Client) watchFailover(failed string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.other(true, failed)
}

// other returns an endpoint of the pool other than failed, chosen at
// random so that clients (and watches) that lose the same node spread
// over the others. A read whose pool holds no other endpoint moves to one
// of Endpoints (and from there, at its next failure, back to the read
// pool). With no other endpoint at all it returns failed. Callers hold mu.
func (c *Client) other(read bool, failed string) string {
	endpoints, _ := c.pool(read)
	others := slices.DeleteFunc(slices.Clone(endpoints), func(e string) bool { return e == failed })
	if len(others) == 0 && read {
		// The only read endpoint failed: read from the voters until the
		// next failure moves back.
		others = slices.DeleteFunc(slices.Clone(c.cfg.Endpoints), func(e string) bool { return e == failed })
	}
	if len(others) == 0 {
		return failed
	}
	return others[c.rng.IntN(len(others))]
}

// backoff returns the full-jitter exponential backoff for attempt (0 is the
// first retry).
func (c *Client) backoff(attempt int) time.Duration {
	ceiling := c.cfg.BackoffMax
	if attempt < 30 {
		ceiling = min(c.cfg.BackoffMax, c.cfg.BackoffBase<<attempt)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Duration(c.rng.Int64N(int64(ceiling) + 1))
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryable reports errors another attempt, maybe on another node, can fix.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Canceled:
		return true
	}
	return false
}

// leaderHint returns the leader's gRPC address from an UNAVAILABLE status.
func leaderHint(err error) string {
	for _, d := range status.Convert(err).Details() {
		if h, ok := d.(*registryv1.LeaderHint); ok {
			return h.GetLeaderGrpcAddress()
		}
	}
	return ""
}

// call runs fn against a node (one of Config.ReadEndpoints for a read,
// when set): each attempt is bounded by CallTimeout; retryable failures
// move to another node after a full-jitter backoff, until ctx ends; a
// rate-limited one (RetryInfo) waits the delay the node asked for and tries
// the same node again. A write goes straight to the leader a failure names.
func (c *Client) call(ctx context.Context, write bool, fn func(context.Context, *grpc.ClientConn) error) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	addr := c.endpointFor(!write)
	followedHint := false
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(addr)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
			err = fn(actx, cc)
			cancel()
			if err == nil {
				return nil
			}
		}
		if !retryable(err) || ctx.Err() != nil || c.ctx.Err() != nil {
			return err
		}
		if hint := leaderHint(err); write && !followedHint && hint != "" && hint != addr {
			addr, followedHint = hint, true
			continue
		}
		followedHint = false
		if d, ok := retryDelay(err); ok {
			// Over this client's write rate on addr: wait as long as the node
			// asks, then try it again (another node would only spread the
			// excess).
			c.log.Debug("registry call rate-limited; waiting the delay the node asked for", "endpoint", addr, "retry_after", d)
			if err := sleep(ctx, d); err != nil {
				return err
			}
			continue
		}
		c.log.Debug("registry call failed; trying another node", "endpoint", addr, "error", err)
		if err := sleep(ctx, c.backoff(attempt)); err != nil {
			return err
		}
		addr = c.failoverFor(!write, addr)
	}
}

// wrote records the index of a write this client made to service, so that
// Discover answers from a cache that reflects it (read your writes).
func (c *Client) wrote(service string, index uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes[service] = max(c.writes[service], index)
}

func (c *Client) writeIndex(service string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes[service]
}

// bearerToken sends an ACL token on every call.
type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false so that the token works on plaintext
// connections too (a loopback or a trusted network); see Config.Token.
func (bearerToken) RequireTransportSecurity() bool { return false }
