package node

import (
	"context"
	"errors"
	"fmt"
	"github.com/regcenter/registry/acl"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/regcenter/registry/beatcheck"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/groupcommit"
	"github.com/regcenter/registry/raftnet"
	"github.com/regcenter/registry/rpc"
	"github.com/regcenter/registry/tlsutil"
	"github.com/regcenter/registry/validate"
)

// ErrDataDirInUse means another process holds the data dir's Raft database.
var ErrDataDirInUse = errors.New("data dir is in use by another process")

// Node is one running registry server.
type Node struct {
	cfg Config
	log *slog.Logger

	fsm       *fsm.FSM
	raft      *raft.Raft
	transport raft.Transport
	peerWait  *raftnet.Transport    // nil with Config.RaftTransport
	bolt      *raftboltdb.BoltStore // nil when InMemory
	startup   *startupSteps         // when each start-up step happened (startup.go)

	rpc      *rpc.Server
	grpc     *grpc.Server
	health   *health.Server
	http     *http.Server
	grpcLis  net.Listener
	httpLis  net.Listener
	barriers *groupcommit.Batcher[struct{}, uint64]
	checker  *beatcheck.Checker
	skew     *skewTracker
	clock    *leaderClock // stamps commands and times the checker

	metrics   *Metrics
	snapshots *snapshotStore
	gateway   *grpc.ClientConn // the HTTP API's connection to this node's gRPC server
	ready     readiness

	conns connCache
	undo  undoList // what New closes again if a later step fails

	tls *tlsutil.Source // nil without TLS
	udp udpBeats        // the UDP beat receiver (node/udp.go)

	dns    dnsState      // node/dns.go
	consul *consulServer // the Consul-compatible API, nil when off (consul.go)

	ctx      context.Context // ends at Shutdown
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	shutdown sync.Once
	stopErr  error
}

// barrierBatching groups concurrent linearizable reads into shared Raft
// barriers: one at a time, each at most a millisecond after the last.
var barrierBatching = groupcommit.Config{Window: time.Millisecond, MaxItems: 100_000}

// New starts a node: it opens the data dir, binds its addresses, starts
// Raft (bootstrapping or joining if it has no state) and serves. If a step
// fails, what the earlier ones opened is closed again, last first.
func New(cfg Config) (_ *Node, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: cfg.Logger.With("node_id", cfg.NodeID), ctx: ctx, cancel: cancel}
	n.startup = newStartupSteps(cfg.Clock, n.log)
	defer func() {
		if err != nil {
			cancel()
			n.undo.run()
		}
		n.undo = nil
	}()

	m, err := n.buildMetrics()
	if err != nil {
		return nil, err
	}
	if err := n.buildFSM(); err != nil {
		return nil, err
	}
	if err := n.setupTLS(); err != nil {
		return nil, err
	}
	if err := n.prepareDataDir(); err != nil {
		return nil, err
	}
	if err := n.listen(); err != nil {
		return nil, err
	}
	stores, err := n.openStores()
	if err != nil {
		return nil, err
	}
	if err := n.buildRaft(stores); err != nil {
		return nil, err
	}
	if err := n.startServers(m); err != nil {
		return nil, err
	}
	if err := n.startDNS(); err != nil {
		return nil, err
	}
	n.startLeaderLoop()
	n.startPublishing()
	n.log.Info("node started", "raft_addr", n.transport.LocalAddr(), "grpc_addr", n.GRPCAddr(), "http_addr", n.HTTPAddr())
	return n, nil
}

// undoList is what New runs, last first, when a later step fails.
type undoList []func()

func (u *undoList) add(fn func()) { *u = append(*u, fn) }

func (u undoList) run() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}

// nodeMetrics are the registry and the collectors the servers need.
type nodeMetrics struct {
	gatherer prometheus.Gatherers // the node's registry and Raft's metrics
	grpc     *grpcprom.ServerMetrics
	rpc      *rpc.Metrics
}

// buildMetrics builds the node's metrics registry and bridges Raft's.
func (n *Node) buildMetrics() (nodeMetrics, error) {
	reg, grpcMetrics, rpcMetrics := n.newRegistry()
	raftGatherer, err := raftMetrics()
	if err != nil {
		return nodeMetrics{}, err
	}
	return nodeMetrics{gatherer: prometheus.Gatherers{reg, raftGatherer}, grpc: grpcMetrics, rpc: rpcMetrics}, nil
}

// buildFSM builds the replica, the clocks fed by its applied timestamps and
// the leader's expiry checker that reads it.
func (n *Node) buildFSM() error {
	n.skew = &skewTracker{clock: n.cfg.Clock}
	n.clock = newLeaderClock(n.cfg.Clock)
	n.fsm = fsm.New(fsm.Config{
		HistorySize:   n.cfg.WatchHistory,
		Logger:        n.log,
		ObserveStamp:  n.observeStamp,
		ObserveEvents: n.metrics.observeEvents,
		// Restored instances carry the backup's last-beat timestamps.
		OnRestore: func(index uint64) {
			n.checker.GrantGrace()
			n.startup.restored(index)
		},
	})
	checkerCfg := n.cfg.Checker
	checkerCfg.Clock = n.clock.now
	// The checker runs only while leading, after startServers built n.rpc.
	checkerCfg.Backlog = func() time.Duration { return n.rpc.BeatBacklog() }
	checkerCfg.Logger = n.log.With("component", "beatcheck")
	var err error
	n.checker, err = beatcheck.New(checkerCfg, n.fsm, n)
	return err
}

// observeStamp is the fsm's ObserveStamp hook: a leader timestamp of an
// applied command feeds the skew estimate and the command clock.
func (n *Node) observeStamp(unixNs int64) {
	n.skew.observe(unixNs)
	n.clock.observe(unixNs)
	n.startup.observeApplied(unixNs)
}

// prepareDataDir creates the data dir and checks that it is writable, so
// that the error names the directory rather than a file deep inside.
func (n *Node) prepareDataDir() error {
	if n.cfg.InMemory {
		return nil
	}
	dir := n.cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	probe, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// listen binds the gRPC address and, unless HTTP is off, the HTTP address.
func (n *Node) listen() error {
	var err error
	if n.grpcLis, err = net.Listen("tcp", n.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("grpc addr: %w", err)
	}
	n.undo.add(func() { n.grpcLis.Close() })
	n.grpcLis = n.limitListener(n.grpcLis)
	if n.cfg.HTTPAddr != "" {
		if n.httpLis, err = net.Listen("tcp", n.cfg.HTTPAddr); err != nil {
			return fmt.Errorf("http addr: %w", err)
		}
		n.undo.add(func() { n.httpLis.Close() })
		// The limit counts TCP connections; TLS runs inside each one.
		n.httpLis = n.tlsHTTPListener(n.limitListener(n.httpLis))
	}
	return nil
}

// raftStores are Raft's log, stable and snapshot stores.
type raftStores struct {
	logs   raft.LogStore
	stable raft.StableStore
	snaps  raft.SnapshotStore
}

// raftLogger sends hashicorp/raft's log lines to the node's logger.
func (n *Node) raftLogger() hclog.Logger {
	return hclog.FromStandardLogger(
		slog.NewLogLogger(n.log.With("component", "raft").Handler(), n.cfg.RaftLogLevel),
		&hclog.LoggerOptions{Name: "raft", Level: hclogLevel(n.cfg.RaftLogLevel)},
	)
}

// openStores opens raft.db and the snapshots in the data dir, or in-memory
// stores; the snapshot store is wrapped to note the last snapshot written.
func (n *Node) openStores() (raftStores, error) {
	cfg := n.cfg
	if cfg.InMemory {
		mem := raft.NewInmemStore()
		n.snapshots = newSnapshotStore(raft.NewInmemSnapshotStore(), "")
		return raftStores{logs: mem, stable: mem, snaps: n.snapshots}, nil
	}
	var err error
	n.bolt, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(cfg.DataDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if errors.Is(err, bbolt.ErrTimeout) {
		return raftStores{}, fmt.Errorf("%w: %s", ErrDataDirInUse, cfg.DataDir)
	}
	if err != nil {
		return raftStores{}, fmt.Errorf("data dir: opening raft.db: %w", err)
	}
	n.undo.add(func() { n.bolt.Close() })
	logs, err := raft.NewLogCache(512, n.bolt)
	if err != nil {
		return raftStores{}, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, n.raftLogger())
	if err != nil {
		return raftStores{}, fmt.Errorf("data dir: snapshots: %w", err)
	}
	n.snapshots = newSnapshotStore(snaps, cfg.DataDir)
	n.startup.record(stepBoltOpened)
	return raftStores{logs: logs, stable: n.bolt, snaps: n.snapshots}, nil
}

// buildRaft sets up the transport and starts Raft on the stores,
// bootstrapping the cluster if this node has no state and was given peers.
func (n *Node) buildRaft(st raftStores) error {
	cfg := n.cfg
	hl := n.raftLogger()
	var err error
	if cfg.RaftTransport != nil {
		n.transport = cfg.RaftTransport
	} else {
		tr, err := n.newRaftTransport(hl)
		if err != nil {
			return err
		}
		n.transport = tr
		n.undo.add(func() { tr.Close() })
		if cfg.WrapRaftTransport != nil {
			n.transport = cfg.WrapRaftTransport(tr)
		}
		// A peer that refuses connections (its process is restarting) is
		// waited for, so that Raft's replication backoff stays short and
		// the restarted peer gets the log as soon as it listens (raftnet).
		pw := cfg.PeerWait
		pw.Logger = n.log.With("component", "raftnet")
		if n.peerWait, err = raftnet.New(n.transport, pw); err != nil {
			return fmt.Errorf("raft transport: %w", err)
		}
		n.transport = n.peerWait
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hl
	// Per-peer metrics with the peer id as a label only, not in the name.
	rc.NoLegacyTelemetry = true
	rc.HeartbeatTimeout = cfg.Raft.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Raft.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.Raft.CommitTimeout
	rc.SnapshotInterval = cfg.Raft.SnapshotInterval
	rc.SnapshotThreshold = cfg.Raft.SnapshotThreshold
	rc.TrailingLogs = cfg.Raft.TrailingLogs
	rc.MaxAppendEntries = cfg.Raft.MaxAppendEntries
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft timing: %w", err)
	}

	hasState, err := raft.HasExistingState(st.logs, st.stable, st.snaps)
	if err != nil {
		return fmt.Errorf("data dir: reading raft state: %w", err)
	}
	if !hasState && len(cfg.BootstrapPeers) > 0 {
		var servers []raft.Server
		for _, p := range cfg.BootstrapPeers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address), Suffrage: raft.Voter})
		}
		if err := raft.BootstrapCluster(rc, st.logs, st.stable, st.snaps, n.transport, raft.Configuration{Servers: servers}); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		n.log.Info("bootstrapped a new cluster", "peers", len(servers))
	}
	if n.raft, err = raft.NewRaft(rc, n.fsm, st.logs, st.stable, st.snaps, n.transport); err != nil {
		return fmt.Errorf("starting raft: %w", err)
	}
	n.undo.add(func() { n.raft.Shutdown().Error() })
	if n.peerWait != nil {
		// Raft's Shutdown waits for its replication goroutines, which may
		// be waiting in the transport: end the waits first (undo runs last
		// first).
		n.undo.add(n.peerWait.StopWaiting)
	}
	n.startup.started(n.raft.AppliedIndex(), n.raft.LastIndex())
	n.startWatchingRaft()
	return nil
}

// startServers builds the read barrier batcher and the gRPC services, and
// serves gRPC and, unless it is off, HTTP.
func (n *Node) startServers(m nodeMetrics) error {
	var err error
	if n.barriers, err = groupcommit.New(barrierBatching, n.flushBarrier); err != nil {
		return err
	}
	n.undo.add(n.barriers.Close)
	if n.rpc, err = rpc.New(rpc.Config{
		NodeID:      n.cfg.NodeID,
		Applier:     n,
		Cluster:     n,
		State:       n.fsm,
		Logger:      n.log,
		Clock:       n.clock.now,
		Beats:       n.cfg.Beats,
		MaxWatchers: n.cfg.MaxWatchers,
		MaxBeatRate: n.cfg.MaxBeatRate,
		Metrics:     m.rpc,
		WriteRate:   n.cfg.Limits.WriteRate,
		WriteBurst:  n.cfg.Limits.WriteBurst,

		MaxWatchesPerClient: n.cfg.Limits.MaxWatchesPerClient,
		ACLDefault:          n.aclDefault(),
	}); err != nil {
		return err
	}
	n.undo.add(n.rpc.Close)
	if err := n.serveUDPBeats(); err != nil {
		return err
	}
	n.serveGRPC(m.grpc)
	if err := n.serveConsul(); err != nil {
		return err
	}
	return n.serveHTTP(m.gatherer)
}

// serveGRPC serves the registry, cluster, health and reflection services.
func (n *Node) serveGRPC(metrics *grpcprom.ServerMetrics) {
	opts := append(n.grpcLimits(), n.grpcServerCreds()...)
	n.grpc = grpc.NewServer(append(opts,
		grpc.MaxRecvMsgSize(validate.MaxRequestBytes),
		grpc.ChainUnaryInterceptor(n.unaryInterceptors(metrics)...),
		grpc.ChainStreamInterceptor(n.streamInterceptors(metrics)...),
	)...)
	n.rpc.RegisterOn(n.grpc)
	n.health = health.NewServer()
	healthpb.RegisterHealthServer(n.grpc, n.health)
	reflection.Register(n.grpc)
	metrics.InitializeMetrics(n.grpc)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.grpc.Serve(n.grpcLis); err != nil {
			n.log.Error("grpc server stopped", "error", err)
		}
	}()
}

// serveHTTP serves the HTTP API (through a connection to this node's gRPC
// server), the metrics and the health endpoints, unless HTTP is off.
func (n *Node) serveHTTP(gatherer prometheus.Gatherers) error {
	if n.httpLis == nil {
		return nil
	}
	var err error
	if n.gateway, err = dialSelf(n.GRPCAddr(), grpc.WithTransportCredentials(n.conns.creds)); err != nil {
		return fmt.Errorf("http api: %w", err)
	}
	n.undo.add(func() { n.gateway.Close() })
	handler, err := n.httpHandler(n.gateway, gatherer)
	if err != nil {
		return fmt.Errorf("http api: %w", err)
	}
	n.http = n.httpServer(n.guardHTTP(handler))
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(n.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server stopped", "error", err)
		}
	}()
	return nil
}

// startLeaderLoop starts the goroutine that runs the leader duties while
// this node leads.
func (n *Node) startLeaderLoop() {
	n.wg.Add(1)
	go n.runLeadership()
}

// startPublishing starts the goroutine that keeps this node a member with
// its addresses published.
func (n *Node) startPublishing() {
	n.wg.Add(1)
	go n.publishAddresses()
}

func hclogLevel(l slog.Level) hclog.Level {
	switch {
	case l <= slog.LevelDebug:
		return hclog.Debug
	case l <= slog.LevelInfo:
		return hclog.Info
	case l <= slog.LevelWarn:
		return hclog.Warn
	default:
		return hclog.Error
	}
}

// GRPCAddr is the bound gRPC address.
func (n *Node) GRPCAddr() string { return n.grpcLis.Addr().String() }

// HTTPAddr is the bound HTTP address, or "" when HTTP is off.
func (n *Node) HTTPAddr() string {
	if n.httpLis == nil {
		return ""
	}
	return n.httpLis.Addr().String()
}

// RaftAddr is the address peers reach this node's Raft at.
func (n *Node) RaftAddr() string { return string(n.transport.LocalAddr()) }

// ID is the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// FSM is the node's replica, for tests and embedders. Read only.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// Raft is the node's Raft instance, for tests and embedders.
func (n *Node) Raft() *raft.Raft { return n.raft }

// advertised returns the client-facing addresses this node publishes.
func (n *Node) advertised() (grpcAddr, httpAddr string) {
	grpcAddr, httpAddr = n.cfg.GRPCAdvertise, n.cfg.HTTPAdvertise
	if grpcAddr == "" {
		grpcAddr = n.GRPCAddr()
	}
	if httpAddr == "" {
		httpAddr = n.HTTPAddr()
	}
	return grpcAddr, httpAddr
}

// Shutdown stops the node gracefully: a leader first hands leadership to
// another voter, then streams end, in-flight calls drain (bounded by
// ShutdownTimeout and ctx), and Raft and the stores close. It is safe to
// call more than once; later calls return the first result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdown.Do(func() { n.stopErr = n.stop(ctx) })
	return n.stopErr
}

func (n *Node) stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ShutdownTimeout)
	defer cancel()
	if n.IsLeader() && n.hasOtherVoters() {
		n.log.Info("transferring leadership before shutdown")
		if err := waitFuture(ctx, n.raft.LeadershipTransfer()); err != nil {
			n.log.Warn("leadership transfer failed; shutting down anyway", "error", err)
		}
	}
	n.health.Shutdown()
	n.closeUDPBeats()
	n.rpc.Close() // ends watches and beat streams, so that GracefulStop can finish
	stopped := make(chan struct{})
	go func() { n.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		n.grpc.Stop()
		<-stopped
	}
	n.stopConsul(ctx)
	if n.http != nil {
		if err := n.http.Shutdown(ctx); err != nil {
			n.http.Close()
		}
		n.gateway.Close()
	}
	n.stopDNS()
	n.cancel()
	n.barriers.Close()
	var errs []error
	if n.peerWait != nil {
		n.peerWait.StopWaiting() // Raft's Shutdown waits for the goroutines that may wait there
	}
	if err := n.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
	}
	n.wg.Wait()
	if c, ok := n.transport.(interface{ Close() error }); ok {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft transport: %w", err))
		}
	}
	if n.bolt != nil {
		if err := n.bolt.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft.db: %w", err))
		}
	}
	n.conns.closeAll()
	if n.tls != nil {
		n.tls.Close()
	}
	n.log.Info("node stopped")
	return errors.Join(errs...)
}

// aclDefault is the parsed ACLDefaultPolicy (Validate checked it).
func (n *Node) aclDefault() acl.Default {
	d, _ := acl.ParseDefault(n.cfg.ACLDefaultPolicy)
	return d
}

// unaryInterceptors: metrics first, then, with ACLs enabled, the ACL check
// innermost, next to the handler (rpc's stream check relies on it).
func (n *Node) unaryInterceptors(metrics *grpcprom.ServerMetrics) []grpc.UnaryServerInterceptor {
	out := []grpc.UnaryServerInterceptor{metrics.UnaryServerInterceptor()}
	if n.cfg.ACLEnabled {
		out = append(out, n.rpc.UnaryInterceptor())
	}
	return out
}

// streamInterceptors: as unaryInterceptors.
func (n *Node) streamInterceptors(metrics *grpcprom.ServerMetrics) []grpc.StreamServerInterceptor {
	out := []grpc.StreamServerInterceptor{metrics.StreamServerInterceptor()}
	if n.cfg.ACLEnabled {
		out = append(out, n.rpc.StreamInterceptor())
	}
	return out
}
