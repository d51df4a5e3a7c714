package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/regcenter/registry/beatcheck"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/groupcommit"
	"github.com/regcenter/registry/rpc"
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
	bolt      *raftboltdb.BoltStore // nil when InMemory

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
// Raft (bootstrapping or joining if it has no state) and serves.
func New(cfg Config) (_ *Node, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, log: cfg.Logger.With("node_id", cfg.NodeID), ctx: ctx, cancel: cancel}
	n.skew = &skewTracker{clock: cfg.Clock}
	n.clock = newLeaderClock(cfg.Clock)
	reg, grpcMetrics, rpcMetrics := n.newRegistry()
	raftGatherer, err := raftMetrics()
	if err != nil {
		cancel()
		return nil, err
	}
	n.fsm = fsm.New(fsm.Config{
		HistorySize:   cfg.WatchHistory,
		Logger:        n.log,
		ObserveStamp:  n.observeStamp,
		ObserveEvents: n.metrics.observeEvents,
		// Restored instances carry the backup's last-beat timestamps.
		OnRestore: func(uint64) { n.checker.GrantGrace() },
	})
	checkerCfg := cfg.Checker
	checkerCfg.Clock = n.clock.now
	checkerCfg.Logger = n.log.With("component", "beatcheck")
	if n.checker, err = beatcheck.New(checkerCfg, n.fsm, n); err != nil {
		cancel()
		return nil, err
	}

	// Undo whatever was opened if a later step fails.
	var closers []func()
	defer func() {
		if err != nil {
			cancel()
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	if !cfg.InMemory {
		if err := prepareDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	if n.grpcLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("grpc addr: %w", err)
	}
	closers = append(closers, func() { n.grpcLis.Close() })
	if cfg.HTTPAddr != "" {
		if n.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("http addr: %w", err)
		}
		closers = append(closers, func() { n.httpLis.Close() })
	}
	if err := n.startRaft(&closers); err != nil {
		return nil, err
	}

	if n.barriers, err = groupcommit.New(barrierBatching, n.flushBarrier); err != nil {
		return nil, err
	}
	closers = append(closers, n.barriers.Close)
	if n.rpc, err = rpc.New(rpc.Config{
		NodeID:      cfg.NodeID,
		Applier:     n,
		Cluster:     n,
		State:       n.fsm,
		Logger:      n.log,
		Clock:       n.clock.now,
		Beats:       cfg.Beats,
		MaxWatchers: cfg.MaxWatchers,
		MaxBeatRate: cfg.MaxBeatRate,
		Metrics:     rpcMetrics,
	}); err != nil {
		return nil, err
	}
	closers = append(closers, n.rpc.Close)

	n.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(validate.MaxRequestBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.ChainUnaryInterceptor(grpcMetrics.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(grpcMetrics.StreamServerInterceptor()),
	)
	n.rpc.RegisterOn(n.grpc)
	n.health = health.NewServer()
	healthpb.RegisterHealthServer(n.grpc, n.health)
	reflection.Register(n.grpc)
	grpcMetrics.InitializeMetrics(n.grpc)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.grpc.Serve(n.grpcLis); err != nil {
			n.log.Error("grpc server stopped", "error", err)
		}
	}()
	if n.httpLis != nil {
		if n.gateway, err = dialSelf(n.GRPCAddr()); err != nil {
			return nil, fmt.Errorf("http api: %w", err)
		}
		closers = append(closers, func() { n.gateway.Close() })
		handler, err := n.httpHandler(n.gateway, prometheus.Gatherers{reg, raftGatherer})
		if err != nil {
			return nil, fmt.Errorf("http api: %w", err)
		}
		n.http = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.http.Serve(n.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				n.log.Error("http server stopped", "error", err)
			}
		}()
	}

	n.wg.Add(2)
	go n.runLeadership()
	go n.publishAddresses()
	n.log.Info("node started", "raft_addr", n.transport.LocalAddr(), "grpc_addr", n.GRPCAddr(), "http_addr", n.HTTPAddr())
	return n, nil
}

// observeStamp is the fsm's ObserveStamp hook: a leader timestamp of an
// applied command feeds the skew estimate and the command clock.
func (n *Node) observeStamp(unixNs int64) {
	n.skew.observe(unixNs)
	n.clock.observe(unixNs)
}

// prepareDataDir creates the data dir and checks that it is writable, so
// that the error names the directory rather than a file deep inside.
func prepareDataDir(dir string) error {
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

// startRaft opens the stores and the transport and starts Raft,
// bootstrapping the cluster if this node has no state and was given peers.
func (n *Node) startRaft(closers *[]func()) error {
	cfg := n.cfg
	hl := hclog.FromStandardLogger(
		slog.NewLogLogger(n.log.With("component", "raft").Handler(), cfg.RaftLogLevel),
		&hclog.LoggerOptions{Name: "raft", Level: hclogLevel(cfg.RaftLogLevel)},
	)

	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
		err    error
	)
	if cfg.InMemory {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		n.bolt, err = raftboltdb.New(raftboltdb.Options{
			Path:        filepath.Join(cfg.DataDir, "raft.db"),
			BoltOptions: &bbolt.Options{Timeout: time.Second},
		})
		if errors.Is(err, bbolt.ErrTimeout) {
			return fmt.Errorf("%w: %s", ErrDataDirInUse, cfg.DataDir)
		}
		if err != nil {
			return fmt.Errorf("data dir: opening raft.db: %w", err)
		}
		*closers = append(*closers, func() { n.bolt.Close() })
		stable = n.bolt
		if logs, err = raft.NewLogCache(512, n.bolt); err != nil {
			return err
		}
		if snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hl); err != nil {
			return fmt.Errorf("data dir: snapshots: %w", err)
		}
	}
	snapDir := cfg.DataDir
	if cfg.InMemory {
		snapDir = ""
	}
	n.snapshots = newSnapshotStore(snaps, snapDir)
	snaps = n.snapshots

	if cfg.RaftTransport != nil {
		n.transport = cfg.RaftTransport
	} else {
		adv, err := net.ResolveTCPAddr("tcp", cfg.RaftAdvertise)
		if err != nil {
			return fmt.Errorf("raft advertise %q: %w", cfg.RaftAdvertise, err)
		}
		tr, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, adv, 3, 10*time.Second, hl)
		if err != nil {
			return fmt.Errorf("raft addr: %w", err)
		}
		n.transport = tr
		*closers = append(*closers, func() { tr.Close() })
		if cfg.WrapRaftTransport != nil {
			n.transport = cfg.WrapRaftTransport(tr)
		}
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
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft timing: %w", err)
	}

	hasState, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return fmt.Errorf("data dir: reading raft state: %w", err)
	}
	if !hasState && len(cfg.BootstrapPeers) > 0 {
		var servers []raft.Server
		for _, p := range cfg.BootstrapPeers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address), Suffrage: raft.Voter})
		}
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, n.transport, raft.Configuration{Servers: servers}); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		n.log.Info("bootstrapped a new cluster", "peers", len(servers))
	}
	if n.raft, err = raft.NewRaft(rc, n.fsm, logs, stable, snaps, n.transport); err != nil {
		return fmt.Errorf("starting raft: %w", err)
	}
	*closers = append(*closers, func() { n.raft.Shutdown().Error() })
	return nil
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
	n.rpc.Close() // ends watches and beat streams, so that GracefulStop can finish
	stopped := make(chan struct{})
	go func() { n.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		n.grpc.Stop()
		<-stopped
	}
	if n.http != nil {
		if err := n.http.Shutdown(ctx); err != nil {
			n.http.Close()
		}
		n.gateway.Close()
	}
	n.cancel()
	n.barriers.Close()
	var errs []error
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
	n.log.Info("node stopped")
	return errors.Join(errs...)
}
