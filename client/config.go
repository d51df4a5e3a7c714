package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/regcenter/registry/tlsutil"
	"github.com/regcenter/registry/validate"
)

// Config configures a Client. Zero fields take the defaults in
// DefaultConfig; only Endpoints is required.
type Config struct {
	// Endpoints are the gRPC addresses (host:port) of some or all of the
	// registry's nodes. Any node serves any call.
	//
	// Watches (Watch and the watch behind each service Discover caches)
	// spread over the read endpoints (ReadEndpoints when set, else
	// Endpoints): each new watch starts on the next endpoint in turn, from
	// a random first one, and a watch whose node fails resumes on another
	// chosen at random. Calls and the beat stream share one endpoint.
	Endpoints []string
	// ReadEndpoints, if set, are the nodes that serve this client's
	// discovery: the watch streams behind Discover's caches and Watch, and
	// the reads Discover makes. Point them at read replicas (registry-node
	// --read-replica) to keep that load off the voters. Registrations,
	// beats and deregistrations always use Endpoints. When the only read
	// endpoint fails, discovery moves to Endpoints until its next failure.
	// Empty: Endpoints serve everything.
	ReadEndpoints []string
	// CallTimeout bounds each attempt of a call (the deadline of one
	// request). Default 5s.
	CallTimeout time.Duration
	// DialTimeout bounds establishing a connection to one node. Default 5s.
	DialTimeout time.Duration
	// KeepaliveTime and KeepaliveTimeout: on an idle connection the client
	// pings every KeepaliveTime and declares the link dead when a ping is
	// not answered within KeepaliveTimeout. Defaults 10s and 5s (the server
	// accepts pings every 5s at most).
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// BackoffBase and BackoffMax bound the full-jitter exponential backoff
	// between attempts on different nodes. Defaults 50ms and 250ms: an
	// election takes 0.3-0.6 s with the registry's default Raft timeouts,
	// and a longer ceiling would leave a client asleep well after the new
	// leader is there (with 1s, a write issued at a leader's SIGKILL took
	// up to 1.7 s instead of about 0.5 s). While no node can serve, a
	// client retries about 8 times a second (etcd's client: every 25 ms);
	// raise BackoffMax for fleets so large that this matters.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
	// KeepRegistrationsOnClose leaves registrations in place on Close; by
	// default Close deregisters what the Client registered.
	KeepRegistrationsOnClose bool
	// Token is an ACL token's secret, sent on every call as
	// "authorization: Bearer <Token>" metadata when set. It is sent over
	// plaintext connections too (the default): off a trusted network, set
	// TLS (or the file fields below), or anyone on the path can read it.
	Token string
	// DialOptions are added to every connection.
	DialOptions []grpc.DialOption
	// TLS, if set, secures every connection; an empty ServerName is taken
	// as tlsutil.ServerName, the name every node's certificate carries.
	// Without TLS and files the connections are plaintext.
	TLS *tls.Config
	// CAFile, CertFile and KeyFile build the TLS config from PEM files
	// (registryctl tls ... create) when TLS is nil: the CA that signed the
	// nodes' certificates, and this client's certificate and key for nodes
	// that require one (--tls-client-auth require, their default).
	CAFile, CertFile, KeyFile string
	// MaxBeatsPerFrame bounds the beats of one BeatStream frame (default and
	// maximum 10,000). 1 sends every beat in a frame of its own.
	MaxBeatsPerFrame int
	// OnBeatAck, if set, is called from the beat stream's goroutine for
	// every answered frame with the number of beats it acknowledged and the
	// time from sending the frame to its answer. It must be quick.
	OnBeatAck func(beats int, latency time.Duration)
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		CallTimeout:      5 * time.Second,
		DialTimeout:      5 * time.Second,
		KeepaliveTime:    10 * time.Second,
		KeepaliveTimeout: 5 * time.Second,
		BackoffBase:      50 * time.Millisecond,
		BackoffMax:       250 * time.Millisecond,
		Logger:           slog.New(slog.DiscardHandler),
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	set(&c.CallTimeout, d.CallTimeout)
	set(&c.DialTimeout, d.DialTimeout)
	set(&c.KeepaliveTime, d.KeepaliveTime)
	set(&c.KeepaliveTimeout, d.KeepaliveTimeout)
	set(&c.BackoffBase, d.BackoffBase)
	set(&c.BackoffMax, d.BackoffMax)
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.MaxBeatsPerFrame == 0 {
		c.MaxBeatsPerFrame = validate.MaxBeatBatch
	}
	return c
}

// transportCredentials are the connections' TLS, or plaintext.
func (c *Config) transportCredentials() (credentials.TransportCredentials, error) {
	cfg := c.TLS
	if cfg == nil && (c.CAFile != "" || c.CertFile != "") {
		var err error
		if cfg, err = tlsutil.ClientConfig(c.CAFile, c.CertFile, c.KeyFile); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	if cfg == nil {
		return insecure.NewCredentials(), nil
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = tlsutil.ServerName
	}
	return credentials.NewTLS(cfg), nil
}

// ErrNoEndpoints is returned by New without endpoints.
var ErrNoEndpoints = errors.New("client: Config.Endpoints is empty: name at least one registry node (host:port)")

// Validate names the first setting that cannot work.
func (c *Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return ErrNoEndpoints
	}
	for i, e := range c.Endpoints {
		if e == "" {
			return fmt.Errorf("client: Config.Endpoints[%d] is empty", i)
		}
	}
	for i, e := range c.ReadEndpoints {
		if e == "" {
			return fmt.Errorf("client: Config.ReadEndpoints[%d] is empty", i)
		}
	}
	switch {
	case c.CallTimeout <= 0 || c.DialTimeout <= 0:
		return fmt.Errorf("client: CallTimeout (%v) and DialTimeout (%v) must be positive", c.CallTimeout, c.DialTimeout)
	case c.KeepaliveTime < 5*time.Second:
		return fmt.Errorf("client: KeepaliveTime is %v; the server refuses pings more often than every 5s", c.KeepaliveTime)
	case c.BackoffBase <= 0 || c.BackoffMax < c.BackoffBase:
		return fmt.Errorf("client: BackoffBase (%v) must be positive and not above BackoffMax (%v)", c.BackoffBase, c.BackoffMax)
	case c.MaxBeatsPerFrame < 1 || c.MaxBeatsPerFrame > validate.MaxBeatBatch:
		return fmt.Errorf("client: MaxBeatsPerFrame is %d, it must be 1 to %d", c.MaxBeatsPerFrame, validate.MaxBeatBatch)
	case c.TLS != nil && (c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""):
		return errors.New("client: set TLS or the CAFile, CertFile and KeyFile, not both")
	case (c.CertFile == "") != (c.KeyFile == ""):
		return fmt.Errorf("client: CertFile (%q) and KeyFile (%q): set both or neither", c.CertFile, c.KeyFile)
	}
	return nil
}

// registerOptions are the options of one registration.
type registerOptions struct {
	interval, suspectAfter, ttl time.Duration
	incarnation                 uint64
	events                      int
}

// RegisterOption tunes a registration.
type RegisterOption func(*registerOptions)

// WithBeatInterval sets how often the instance beats (default 5s).
func WithBeatInterval(d time.Duration) RegisterOption {
	return func(o *registerOptions) { o.interval = d }
}

// WithSuspectAfter sets how long without an acknowledged beat makes the
// instance SUSPECT (default TTL/2).
func WithSuspectAfter(d time.Duration) RegisterOption {
	return func(o *registerOptions) { o.suspectAfter = d }
}

// WithTTL sets how long without an acknowledged beat removes the instance
// (default 6 × the beat interval). It must be at least 3 × the interval.
func WithTTL(d time.Duration) RegisterOption {
	return func(o *registerOptions) { o.ttl = d }
}

// WithIncarnation sets the first incarnation (default: the current time in
// milliseconds, so that a restarted process supersedes its previous run).
func WithIncarnation(n uint64) RegisterOption {
	return func(o *registerOptions) { o.incarnation = n }
}

// WithEventBuffer sets the capacity of the registration's event channel
// (default 16). When the application does not read and the channel is
// full, new events are dropped.
func WithEventBuffer(n int) RegisterOption {
	return func(o *registerOptions) { o.events = n }
}

// discoverOptions are the options of Discover.
type discoverOptions struct {
	consistency    Consistency
	includeSuspect bool
}

// DiscoverOption tunes Discover.
type DiscoverOption func(*discoverOptions)

// Consistency chooses how fresh a Discover answer must be.
type Consistency int

const (
	// Cached answers from the client's watched cache (the default): fresh
	// to within the replication delay, no call per Discover.
	Cached Consistency = iota
	// Leader reads through the leader.
	Leader
	// Linearizable reads through the leader after it confirms its
	// leadership: it reflects every write acknowledged before the call.
	Linearizable
)

// WithConsistency chooses how fresh the answer must be.
func WithConsistency(c Consistency) DiscoverOption {
	return func(o *discoverOptions) { o.consistency = c }
}

// WithSuspect includes SUSPECT instances.
func WithSuspect() DiscoverOption {
	return func(o *discoverOptions) { o.includeSuspect = true }
}
