package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/regcenter/registry/acl"
	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/groupcommit"
	"github.com/regcenter/registry/internal/defaults"
)

// Applier proposes a command through the local Raft and returns the fsm's
// response, or the fsm's domain error as a Go error. The services propose
// with fsm.Propose.
type Applier = fsm.Proposer

// Leadership is what the services need to know of the Raft leadership to
// route a call: serve it here, forward it, or read locally.
type Leadership interface {
	// IsLeader reports whether this node is the leader now.
	IsLeader() bool
	// Leader returns the leader's id, and false when none is known.
	Leader() (id string, ok bool)
	// LeaderConn returns a connection to the leader's gRPC address, or an
	// error wrapping ErrNoLeader.
	LeaderConn() (*grpc.ClientConn, error)
	// ReadBarrier returns once a read of the local state is linearizable:
	// this node is the leader, has confirmed it with a quorum, and has
	// applied everything committed before the call.
	ReadBarrier(ctx context.Context) error
}

// Admin is what the Cluster service does to the Raft cluster, on the
// leader, and what it reports of it.
type Admin interface {
	// Status describes the node and the cluster.
	Status(ctx context.Context) (Status, error)
	// AddVoter adds a voter, or does nothing if it is one already at that
	// address; a non-voter stays one (at that address): Promote changes
	// roles. It returns the configuration's index.
	AddVoter(ctx context.Context, id, raftAddr string) (uint64, error)
	// AddNonvoter adds a read replica (a Raft non-voter), or does nothing
	// if the node is a member at that address already, voter or not.
	AddNonvoter(ctx context.Context, id, raftAddr string) (uint64, error)
	// Promote makes a member a voter; Demote makes a voter a non-voter,
	// refusing (ErrMembershipRefused) the leader and a change that leaves
	// fewer than MinVotersAfterDemote voters. An id that is not in the
	// configuration is ErrNotMember.
	Promote(ctx context.Context, id string) (uint64, error)
	Demote(ctx context.Context, id string) (uint64, error)
	// RemoveServer removes a server from the configuration; an id that is
	// not in it is ErrNotMember.
	RemoveServer(ctx context.Context, id string) (uint64, error)
	// TransferLeadership hands leadership to id, or to any voter if id is
	// empty, and returns the new leader's id.
	TransferLeadership(ctx context.Context, id string) (string, error)
	// ReleaseExpiryGuard releases the mass-expiry guard of the leader's
	// checker; it reports whether the guard was engaged and what it held.
	ReleaseExpiryGuard(ctx context.Context) (wasEngaged bool, held int, err error)
	// RestoreSnapshot replaces the registry's contents with the backup read
	// from r (until io.EOF), through Raft, on the leader. It returns the
	// leader's applied index once the backup is installed and what it holds;
	// a backup that does not decode fails with fsm.ErrBadSnapshot.
	RestoreSnapshot(ctx context.Context, r io.Reader) (fsm.SnapshotInfo, error)
}

// Cluster is both: the node package implements it in one type.
type Cluster interface {
	Leadership
	Admin
}

// Status describes a node and its cluster as the node sees them; the
// Cluster service answers it as a registry.v1.StatusResponse.
type Status struct {
	NodeID string
	// Role is follower, candidate, leader or shutdown.
	Role                                 string
	Term                                 uint64
	LeaderID                             string
	LeaderGRPCAddress, LeaderHTTPAddress string
	AppliedIndex, CommitIndex            uint64
	LastLogIndex                         uint64
	Members                              []Member

	// The expiry checker's state (it runs on the leader only).
	CheckerRunning, ExpiryGuardEngaged, ExpiryGuardReleased bool
	ExpiriesHeld                                            int
	FailoverFenceRemaining                                  time.Duration
	// ClockSkew is this node's clock minus the leader's, when known.
	ClockSkew      time.Duration
	ClockSkewKnown bool
	// LastContact is how long ago this follower last heard from the
	// leader, when it has.
	LastContact      time.Duration
	LastContactKnown bool
}

// Member is one server of the Raft configuration.
type Member struct {
	ID, RaftAddress, GRPCAddress, HTTPAddress string
	Voter, Leader                             bool
}

// Role names a member's part in the configuration: RoleVoter, or
// RoleReplica for a Raft non-voter.
func (m Member) Role() string {
	if m.Voter {
		return RoleVoter
	}
	return RoleReplica
}

// Member roles (registry.v1.Member.role).
const (
	RoleVoter   = "voter"
	RoleReplica = "replica"
)

// MinVotersAfterDemote is the fewest voters Demote leaves: three voters
// survive the loss of one.
const MinVotersAfterDemote = 3

// StateReader reads the local replica. *fsm.FSM implements it.
type StateReader interface {
	AppliedIndex() uint64
	GetService(service string, includeSuspect bool) ([]fsm.Instance, uint64)
	Instance(service, id string) (fsm.Instance, bool)
	ListServices() ([]fsm.ServiceSummary, uint64)
	Node(id string) (fsm.NodeMeta, bool)
	Changed() <-chan struct{}
	Reset(service string) ([]fsm.Instance, uint64)
	EventsAfter(service string, after uint64, max int) ([]fsm.Event, uint64, error)
	WriteSnapshot(w io.Writer) (fsm.SnapshotInfo, error)
	HashIndex() (string, uint64)
	ACLReader
	ACLPolicy(name string) (fsm.ACLPolicy, bool)
	ACLPolicies() ([]fsm.ACLPolicy, uint64)
	ACLTokens() ([]fsm.ACLToken, uint64)
	// BeatSecret is the cluster beat secret (see udpbeats.go), or nil.
	BeatSecret() []byte
}

// Config configures a Server.
type Config struct {
	// NodeID names this node in forwarded calls and logs.
	NodeID  string
	Applier Applier
	Cluster Cluster
	State   StateReader
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Clock stamps commands proposed by this node. Default time.Now.
	Clock func() time.Time
	// Beats tunes the beat group commit; zero fields take its defaults
	// (a 10 ms window: at most 100 beat entries a second, up to
	// defaultBeatInflight of them under way at once).
	Beats groupcommit.Config
	// Writes tunes the group commit of Register and Deregister (on the
	// leader it proposes, on a follower it forwards); zero fields take its
	// defaults (a 1 ms window: a lone write is proposed at once, concurrent
	// ones share an entry; 16 flushes in flight).
	Writes groupcommit.Config
	// MaxWatchers bounds concurrent watches on this node. Default 10,000.
	MaxWatchers int
	// MaxWatchesPerStream bounds the watches of one WatchMany stream
	// (each also takes one of MaxWatchers and MaxWatchesPerClient).
	// Default 10,000.
	MaxWatchesPerStream int
	// WatchBatch bounds the events (and reset instances) of one watch
	// message. Default 256.
	WatchBatch int
	// MaxInflightBeatFrames bounds the frames of one BeatStream being
	// committed at once. Default 64.
	MaxInflightBeatFrames int
	// MaxBeatRate is the beats per second the leader accepts before it asks
	// clients to beat less often: above it, beat replies recommend
	// (rate / MaxBeatRate) × the shortest interval of the batch's
	// instances. Default 200,000.
	MaxBeatRate int
	// Metrics receives the services' metrics; default unregistered ones.
	Metrics *Metrics
	// ForwardTimeout bounds a follower's forwarded beat or write batch. The beat
	// group commit runs one flush at a time, so a forward stuck on a leader
	// that vanished (a killed container's address swallows packets rather
	// than refusing them) must not hold every beat of this node for long.
	// Default 1s: a commit takes milliseconds.
	ForwardTimeout time.Duration
	// WriteRate is the writes per second one client may make (token
	// bucket of WriteBurst). A client is its ACL token (by accessor id)
	// when the node enforces ACLs, its address otherwise (an IPv4 address,
	// an IPv6 /64). A Register, a Deregister, a Beat call
	// or one BeatStream frame is one write, however many instances it
	// names. Beyond it a call is ResourceExhausted with a RetryInfo.
	// Counted on the node the client reached, never again on the leader a
	// call is forwarded to. Default 100,000/s, burst 100,000: above the
	// benchmarks' single-beat frames from one address (W1 single, up to
	// 50,000 frames/s from 127.0.0.1); deployments with many client
	// addresses can set far less.
	WriteRate  float64
	WriteBurst int
	// MaxClients bounds the clients (tokens or addresses) whose write rate
	// is tracked;
	// beyond it the least recently seen is forgotten. Default 65,536.
	MaxClients int
	// MaxWatchesPerClient bounds the concurrent watches of one client
	// (token or address, as for WriteRate) on this node. Default 1,024.
	MaxWatchesPerClient int
	// ACLDefault decides, when the node enforces ACLs (it installs
	// UnaryInterceptor and StreamInterceptor), what a token may do where
	// no rule of its policies matches. Default deny.
	ACLDefault acl.Default
	// AuditLogger receives the audit lines of write and admin calls when
	// ACLs are enforced. Default Logger with logger=audit.
	AuditLogger *slog.Logger
}

// DefaultConfig returns the defaults of every setting but the
// dependencies (NodeID, Applier, Cluster, State, Metrics).
func DefaultConfig() Config {
	return Config{
		Logger:                slog.New(slog.DiscardHandler),
		Clock:                 time.Now,
		Beats:                 defaultBeats(),
		Writes:                defaultWrites(),
		MaxWatchers:           10_000,
		MaxWatchesPerStream:   10_000,
		WatchBatch:            256,
		MaxInflightBeatFrames: 64,
		MaxBeatRate:           200_000,
		ForwardTimeout:        time.Second,
		WriteRate:             100_000,
		WriteBurst:            100_000,
		MaxClients:            65_536,
		MaxWatchesPerClient:   1024,
	}
}

// WithDefaults returns c with each zero setting set to its default.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	c.Beats = c.Beats.WithDefaultsFrom(d.Beats)
	c.Writes = c.Writes.WithDefaultsFrom(d.Writes)
	defaults.Fill(&c, d)
	return c
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("rpc: NodeID is required")
	case c.Applier == nil || c.Cluster == nil || c.State == nil:
		return errors.New("rpc: Applier, Cluster and State are required")
	case c.MaxWatchers < 0 || c.WatchBatch < 0 || c.MaxInflightBeatFrames < 0 || c.MaxBeatRate < 0:
		return fmt.Errorf("rpc: MaxWatchers (%d), WatchBatch (%d) and MaxInflightBeatFrames (%d) must not be negative",
			c.MaxWatchers, c.WatchBatch, c.MaxInflightBeatFrames)
	case c.MaxWatchesPerStream < 0:
		return fmt.Errorf("rpc: MaxWatchesPerStream (%d) must not be negative", c.MaxWatchesPerStream)
	case c.WriteRate <= 0 || c.WriteBurst < 1 || c.MaxClients < 1 || c.MaxWatchesPerClient < 1:
		return fmt.Errorf("rpc: WriteRate (%v) must be positive, WriteBurst (%d), MaxClients (%d) and MaxWatchesPerClient (%d) at least 1",
			c.WriteRate, c.WriteBurst, c.MaxClients, c.MaxWatchesPerClient)
	}
	if err := c.Writes.Validate(); err != nil {
		return fmt.Errorf("rpc: Writes: %w", err)
	}
	return c.Beats.Validate()
}

// Server implements registry.v1.Registry and registry.v1.Cluster.
type Server struct {
	registryv1.UnimplementedRegistryServer
	registryv1.UnimplementedClusterServer
	registryv1.UnimplementedACLServer

	cfg     Config
	log     *slog.Logger
	applier Applier
	cluster Leadership // routes calls
	admin   Admin      // the Cluster service's operations
	state   StateReader
	beats   *groupcommit.Batcher[beatItem, beatOutcome]
	writes  *groupcommit.Batcher[writeItem, writeOutcome]
	rate    rateMeter // beats applied per second, on the leader
	metrics *Metrics

	watchers     chan struct{} // a slot per watch
	batches      sharedBatches // event messages encoded once for every watch (watch.go)
	clients      *clients      // write rates and watches per client address
	gatewayToken string        // see GatewayToken
	done         chan struct{} // closed by Close
	wg           sync.WaitGroup
	closeMu      sync.Once
	goMu         sync.Mutex // guards closed and wg.Add
	closed       bool

	resolver *Resolver
	auditLog *slog.Logger
}

// New returns a Server; zero fields of cfg take their defaults.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.AuditLogger == nil {
		cfg.AuditLogger = cfg.Logger.With("logger", "audit")
	}
	s := &Server{
		resolver: NewResolver(cfg.State, cfg.ACLDefault),
		auditLog: cfg.AuditLogger,
		cfg:      cfg,
		log:      cfg.Logger,
		applier:  cfg.Applier,
		cluster:  cfg.Cluster,
		admin:    cfg.Cluster,
		state:    cfg.State,
		watchers: make(chan struct{}, cfg.MaxWatchers),
		done:     make(chan struct{}),
		rate:     rateMeter{clock: cfg.Clock},
		metrics:  cfg.Metrics,
		clients:  newClients(cfg),

		gatewayToken: newGatewayToken(),
	}
	b, err := groupcommit.New(cfg.Beats, s.flushBeats)
	if err != nil {
		return nil, err
	}
	s.beats = b
	w, err := groupcommit.New(cfg.Writes, s.flushWrites)
	if err != nil {
		b.Close()
		return nil, err
	}
	s.writes = w
	return s, nil
}

// RegisterOn registers the three services on a gRPC server, with handlers that
// decode requests themselves (see decodingRequests).
func (s *Server) RegisterOn(gs *grpc.Server) {
	gs.RegisterService(s.decodingRequests(&registryv1.Registry_ServiceDesc), s)
	gs.RegisterService(s.decodingRequests(&registryv1.Cluster_ServiceDesc), s)
	gs.RegisterService(s.decodingRequests(&registryv1.ACL_ServiceDesc), s)
}

// Resolver returns the Server's token resolver, for the node's HTTP
// endpoints that read the replica directly.
func (s *Server) Resolver() *Resolver { return s.resolver }

// Close ends every watch and beat stream, fails waiting beats, and waits
// for the goroutines of the Server.
func (s *Server) Close() {
	s.closeMu.Do(func() {
		s.goMu.Lock()
		s.closed = true // no goroutine starts after this
		s.goMu.Unlock()
		close(s.done)
		s.beats.Close()
		s.writes.Close()
		s.wg.Wait()
	})
}

// goTracked runs fn in a goroutine that Close waits for, or, once Close has
// begun, does not run it and returns false: a stream that arrives while the
// node stops must not add to the WaitGroup Close is waiting on.
func (s *Server) goTracked(fn func()) bool {
	s.goMu.Lock()
	defer s.goMu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

func (s *Server) now() int64 { return s.cfg.Clock().UnixNano() }

// forwardedKey marks a call forwarded by another node, with that node's id.
const forwardedKey = "x-registry-forwarded-by"

func forwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(forwardedKey)) > 0
}

// toLeader prepares a call of method to the leader: it returns the leader's
// connection and ctx marked as forwarded by this node, carrying the caller's
// authorization (the leader checks it again), and counts the call.
func (s *Server) toLeader(ctx context.Context, method string) (context.Context, *grpc.ClientConn, error) {
	return s.toLeaderAs(ctx, method, incomingAuthorization(ctx))
}

// toLeaderAs is toLeader with the authorization value to send.
func (s *Server) toLeaderAs(ctx context.Context, method, authorization string) (context.Context, *grpc.ClientConn, error) {
	conn, err := s.cluster.LeaderConn()
	if err != nil {
		return nil, nil, err
	}
	s.metrics.forwarded.WithLabelValues(method).Inc()
	kv := []string{forwardedKey, s.cfg.NodeID}
	if authorization != "" {
		kv = append(kv, authorizationKey, authorization)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...), conn, nil
}

// incomingAuthorization returns the authorization metadata of the call.
func incomingAuthorization(ctx context.Context) string {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ""
	}
	if v := md.Get(authorizationKey); len(v) > 0 {
		return v[0]
	}
	return ""
}

// forwardOnce returns the context and connection for forwarding the call
// of method in ctx to the leader. A call that was forwarded to this node
// already is refused with ErrNotLeader rather than forwarded again, so
// requests never loop between nodes that disagree on the leader.
func (s *Server) forwardOnce(ctx context.Context, method string) (context.Context, *grpc.ClientConn, error) {
	if forwarded(ctx) {
		return nil, nil, ErrNotLeader
	}
	return s.toLeader(ctx, method)
}

// forward runs call, a call of method, against the leader (see forwardOnce).
func forward[Resp any](ctx context.Context, s *Server, method string, call func(context.Context, *grpc.ClientConn) (Resp, error)) (Resp, error) {
	var zero Resp
	ctx, conn, err := s.forwardOnce(ctx, method)
	if err != nil {
		return zero, s.toStatus(err)
	}
	resp, err := call(ctx, conn)
	if err != nil {
		return zero, s.toStatus(err)
	}
	return resp, nil
}
