package node

import (
	"errors"
	"fmt"
	"github.com/regcenter/registry/acl"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/regcenter/registry/beatcheck"
	"github.com/regcenter/registry/dnsserver"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/groupcommit"
	"github.com/regcenter/registry/internal/defaults"
	"github.com/regcenter/registry/raftnet"
	"github.com/regcenter/registry/rpc"
	"github.com/regcenter/registry/tlsutil"
	"github.com/regcenter/registry/udpbeat"
	"github.com/regcenter/registry/validate"
)

// Peer is one member of the initial cluster.
type Peer struct {
	ID      string
	Address string // Raft address, host:port
}

// ParsePeers parses "id=host:port,id=host:port".
func ParsePeers(s string) ([]Peer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var peers []Peer
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("peer %q is not id=host:port", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("peer %q: address is not host:port: %v", part, err)
		}
		if seen[id] {
			return nil, fmt.Errorf("peer id %q appears twice", id)
		}
		seen[id] = true
		peers = append(peers, Peer{ID: id, Address: addr})
	}
	return peers, nil
}

// RaftTiming tunes the Raft protocol; see hashicorp/raft's Config. Zero
// fields take DefaultConfig's values, field by field.
type RaftTiming struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotInterval   time.Duration
	SnapshotThreshold  uint64
	TrailingLogs       uint64
	// MaxAppendEntries bounds the log entries of one AppendEntries: a
	// follower that lags (a restart) catches up in rounds of this many,
	// each a round trip and a disk write.
	MaxAppendEntries int
}

// withDefaults returns t with each zero field set from DefaultConfig.
func (t RaftTiming) withDefaults() RaftTiming {
	defaults.Fill(&t, DefaultConfig().Raft)
	return t
}

// Config configures a Node.
type Config struct {
	// NodeID is the Raft server id, unique in the cluster: 1-128 characters
	// of [A-Za-z0-9._:-].
	NodeID string
	// DataDir holds raft.db (log and stable store) and snapshots/.
	DataDir string
	// InMemory keeps the log, stable store and snapshots in memory, for
	// tests; DataDir is then not used.
	InMemory bool
	// RaftAddr is the Raft bind address; RaftAdvertise the address peers
	// dial (default RaftAddr).
	RaftAddr      string
	RaftAdvertise string
	// RaftTransport replaces the TCP transport on RaftAddr, for tests.
	RaftTransport raft.Transport
	// PeerWait bounds how long a Raft call waits for a peer that refuses
	// connections (its process restarting) before Raft counts a failure
	// and backs off (package raftnet). Zero fields take raftnet's
	// defaults; a negative MaxWait turns waiting off. Not used with
	// RaftTransport.
	PeerWait raftnet.Config
	// RaftListener, if set, is the bound Raft listener to use instead of
	// binding RaftAddr, for tests (port 0); RaftAdvertise must name it.
	RaftListener net.Listener
	// TLS names the certificate, key and CA files; with them every port
	// (gRPC, HTTP, Raft) and every node-to-node connection uses TLS.
	TLS tlsutil.Config
	// GRPCAddr is the client API address; HTTPAddr serves metrics and
	// health (empty disables it). Port 0 picks a free port.
	GRPCAddr string
	HTTPAddr string
	// ConsulAddr serves the Consul-compatible HTTP API (package consulapi);
	// empty (the default) leaves it off. The docs use 127.0.0.1:8500.
	ConsulAddr string
	// GRPCAdvertise and HTTPAdvertise are the addresses other nodes and
	// clients reach this node at (default: the bound addresses).
	GRPCAdvertise string
	HTTPAdvertise string
	// BootstrapPeers is the initial cluster, the same list on every node.
	// It is used only when the node has no state yet.
	BootstrapPeers []Peer
	// Join is the gRPC address of a running cluster member to join as a
	// voter, when the node has no state yet.
	Join string
	// ReadReplica joins through Join as a Raft non-voter: the node
	// replicates the log and serves reads, watches, beats and writes like
	// a follower, but never votes, counts in a quorum or leads (README,
	// "Read replicas"). Cluster.Promote makes it a voter.
	ReadReplica bool
	// Logger defaults to discarding.
	Logger *slog.Logger
	// RaftLogLevel is the least level of hashicorp/raft's own log lines.
	RaftLogLevel slog.Level
	// Raft tunes the protocol.
	Raft RaftTiming
	// Beats tunes the beat group commit; zero fields take groupcommit's
	// defaults.
	Beats groupcommit.Config
	// Checker tunes the leader's expiry checker; zero fields take its
	// defaults (Clock and Logger come from this Config).
	Checker beatcheck.Config
	// MaxBeatRate is the beats per second the leader takes before its beat
	// replies recommend longer intervals (rpc.Config.MaxBeatRate).
	MaxBeatRate int
	// WatchHistory is the number of events kept for watches to resume from
	// (fsm.Config.HistorySize).
	WatchHistory int
	// MaxWatchers bounds the watches one node serves
	// (rpc.Config.MaxWatchers).
	MaxWatchers int
	// Limits bound what clients can take of the node (node/limits.go).
	Limits Limits
	// ShutdownTimeout bounds a graceful shutdown's leadership transfer and
	// the drain of in-flight calls.
	ShutdownTimeout time.Duration
	// Clock stamps commands this node proposes; default time.Now.
	Clock func() time.Time

	// WrapRaftTransport, when set, wraps the TCP transport built on RaftAddr
	// (not RaftTransport). Test-only: registry-node --test-fault-injection
	// uses it to drop Raft traffic between chosen peers.
	WrapRaftTransport func(raft.Transport) raft.Transport
	// EnablePprof serves net/http/pprof under /debug/pprof/ on HTTPAddr
	// (off by default: profiles reveal the process's memory and cost CPU
	// while they run; whoever reaches HTTPAddr may take them).
	EnablePprof bool

	// ACLEnabled makes every gRPC and HTTP call (but health checks and the
	// one-time ACL bootstrap) need a token with the permission the call
	// needs (rpc's rules table), and filters reads by what the token may
	// read. Off, the registry is open as before.
	ACLEnabled bool
	// ACLDefaultPolicy is "deny" or "allow": what a token may do where no
	// rule of its policies matches. Default deny.
	ACLDefaultPolicy string
	// ACLToken is the secret of the token this node sends on its own calls
	// to other nodes: joining through --join and publishing its addresses
	// (Cluster.Join, which needs operator:write), like Consul's agent
	// token. With ACLs on and no token (or one not yet created), a new node
	// cannot join and a follower's address record stays unpublished; the
	// node logs a warning and retries every second. Never logged.
	ACLToken string
	// ACLInitialManagementToken, with ACLs on, is the secret of the first
	// management token (Consul's initial_management): the leader bootstraps
	// the ACLs with it if they are not yet bootstrapped (aclbootstrap.go).
	// Give every server the same one. Never logged.
	ACLInitialManagementToken acl.Secret

	// DNS serves DNS from this node's replica (package dnsserver); off
	// unless DNS.Addr is set.
	DNS dnsserver.Config

	// UDPBeatAddr is the UDP address that takes beat datagrams (package
	// udpbeat); empty (the default) turns UDP beats off. UDPBeat tunes the
	// receiver; zero fields take udpbeat's defaults.
	UDPBeatAddr string
	UDPBeat     udpbeat.Config

	// DebugHandlers are added to the HTTP mux, pattern → handler. Test-only:
	// registry-node --test-fault-injection serves its control endpoint here.
	DebugHandlers map[string]http.Handler
}

// DefaultConfig returns a Config with every default filled in; the caller
// sets NodeID, DataDir, addresses and how the cluster forms. The settings
// of the components the node configures (the checker, the beat group
// commit, the services, the fsm) take their packages' defaults.
func DefaultConfig() Config {
	services := rpc.DefaultConfig()
	return Config{
		RaftAddr:     "127.0.0.1:7101",
		GRPCAddr:     "127.0.0.1:7001",
		HTTPAddr:     "127.0.0.1:7201",
		Logger:       slog.New(slog.DiscardHandler),
		RaftLogLevel: slog.LevelWarn,
		// A fifth of hashicorp/raft's heartbeat and election timeouts (1s),
		// for a LAN: a follower starts an election 200-600 ms after the
		// leader's last heartbeat (sent every 20-40 ms), and the second
		// follower must have timed out too before it grants its vote, so a
		// SIGKILLed leader is replaced and the next write commits in
		// 0.3-0.6 s (docs/benchmarks.md, W4; one run in 20 took 0.84 s)
		// instead of 1.3-2.7 s. No leader change in W1 at and beyond
		// capacity on a loaded two-core machine. The lease equals the
		// heartbeat timeout (its maximum) so that a busy leader does not
		// step down sooner than a follower would give up on it. Raise all
		// three together (--raft-*-timeout) for links with round trips of
		// tens of milliseconds or long pauses.
		//
		// CommitTimeout is a fifth of hashicorp/raft's 50 ms, which made
		// watchers on followers wait: a follower learns of a commit only
		// with the leader's next AppendEntries, which an idle leader sends
		// 1-2 CommitTimeouts after the last. In registry-bench W5 (1,000
		// watchers, one registration per round, two cores, load average
		// 1-2) the followers' first delivery trailed the leader's by 75 ms
		// (p50) at 50 ms, 15 at 10 ms and 9 at 5 ms; delivery p99 fell
		// from 105 to 27 ms (10,000 watchers: 166 to 138 ms). The cost is
		// the idle AppendEntries: the three nodes' idle CPU went from 0.07
		// to 0.13 CPU-s/s (0.17 at 5 ms). In W1 (20,000 instances,
		// batched) the beat p99 showed no difference beyond the
		// run-to-run noise (under load the leader sends for new entries
		// anyway); the nodes' CPU was 0.40-0.48 CPU-s/s against 0.32-0.44.
		//
		// Snapshots are checked every 5 s and taken past 1,024 entries
		// (hashicorp/raft: 2 min and 8,192). A restarted node applies
		// every entry after its last snapshot again before it serves
		// current reads, and hashicorp/raft reads them all once more at
		// start for configuration changes: in registry-bench W4 (2,000
		// instances beating, about 200 entries a second) a SIGKILLed node
		// caught up in 280 ms (p50 of 7) with the old values, whose
		// cluster never snapshotted in the run, against 215 ms with these
		// (etcd in the same run: 171 ms). A snapshot costs
		// O(chunks) on Apply (fsm.Snapshot); its encoding runs beside it.
		// At a million instances one is about 85 MiB: raise the threshold
		// there to write them less often.
		// The rest are hashicorp/raft's defaults.
		Raft: RaftTiming{
			HeartbeatTimeout:   200 * time.Millisecond,
			ElectionTimeout:    200 * time.Millisecond,
			LeaderLeaseTimeout: 200 * time.Millisecond,
			CommitTimeout:      10 * time.Millisecond,
			SnapshotInterval:   5 * time.Second,
			SnapshotThreshold:  1024,
			TrailingLogs:       10240,
			MaxAppendEntries:   64,
		},
		Beats:            services.Beats,
		Checker:          beatcheck.DefaultConfig(),
		MaxBeatRate:      services.MaxBeatRate,
		WatchHistory:     fsm.DefaultConfig().HistorySize,
		MaxWatchers:      services.MaxWatchers,
		ShutdownTimeout:  10 * time.Second,
		Clock:            time.Now,
		ACLDefaultPolicy: services.ACLDefault.String(),
		TLS:              tlsutil.DefaultConfig(),
		Limits:           DefaultLimits(),
		DNS:              dnsserver.DefaultConfig(),
		UDPBeat:          udpbeat.DefaultConfig(),
	}
}

// withDefaults fills each zero field from DefaultConfig, and each zero
// field of the embedded configs from their packages' defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	defaults.Set(&c.Logger, d.Logger)
	c.Raft = c.Raft.withDefaults()
	c.Beats = c.Beats.WithDefaultsFrom(d.Beats)
	c.Checker = c.Checker.WithDefaults()
	defaults.Set(&c.MaxBeatRate, d.MaxBeatRate)
	defaults.Set(&c.WatchHistory, d.WatchHistory)
	defaults.Set(&c.MaxWatchers, d.MaxWatchers)
	defaults.Set(&c.ShutdownTimeout, d.ShutdownTimeout)
	c.Limits = c.Limits.WithDefaults()
	defaults.Set(&c.ACLDefaultPolicy, d.ACLDefaultPolicy)
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	defaults.Set(&c.RaftAdvertise, c.RaftAddr)
	c.TLS = c.TLS.WithDefaults()
	c.DNS = c.DNS.WithDefaults()
	c.UDPBeat = c.UDPBeat.WithDefaults()
	c.PeerWait = c.PeerWait.WithDefaults()
	return c
}

// Validate reports every setting that cannot work, one error each, joined
// (errors.Join): a start-up failure names all the problems at once.
func (c *Config) Validate() error {
	var errs []error
	if err := validate.Name("node id", c.NodeID); err != nil {
		errs = append(errs, err)
	}
	if c.DataDir == "" && !c.InMemory {
		errs = append(errs, errors.New("data dir: is required"))
	}
	if c.RaftTransport == nil {
		if _, _, err := net.SplitHostPort(c.RaftAddr); err != nil {
			errs = append(errs, fmt.Errorf("raft addr %q: %v", c.RaftAddr, err))
		}
		if host, _, err := net.SplitHostPort(c.RaftAdvertise); err == nil {
			if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
				errs = append(errs, fmt.Errorf("raft advertise %q: peers cannot dial an unspecified address; set --raft-advertise", c.RaftAdvertise))
			}
		} else {
			errs = append(errs, fmt.Errorf("raft advertise %q: %v", c.RaftAdvertise, err))
		}
	}
	if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
		errs = append(errs, fmt.Errorf("grpc addr %q: %v", c.GRPCAddr, err))
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("http addr %q: %v", c.HTTPAddr, err))
		}
	}
	if c.ConsulAddr != "" {
		if _, _, err := net.SplitHostPort(c.ConsulAddr); err != nil {
			errs = append(errs, fmt.Errorf("consul addr %q: %v", c.ConsulAddr, err))
		}
	}
	if len(c.BootstrapPeers) > 0 {
		if c.Join != "" {
			errs = append(errs, errors.New("bootstrap peers and join: set one, not both"))
		}
		found := false
		for _, p := range c.BootstrapPeers {
			found = found || p.ID == c.NodeID
		}
		if !found {
			errs = append(errs, fmt.Errorf("bootstrap peers: do not name this node (%q)", c.NodeID))
		}
	}
	if c.ReadReplica && c.Join == "" {
		errs = append(errs, errors.New("read replica: needs join (the gRPC address of a member); a replica cannot bootstrap a cluster"))
	}
	r := c.Raft
	if r.HeartbeatTimeout < 5*time.Millisecond || r.ElectionTimeout < 5*time.Millisecond {
		errs = append(errs, fmt.Errorf("raft timing: heartbeat (%v) and election (%v) timeouts must be at least 5ms", r.HeartbeatTimeout, r.ElectionTimeout))
	}
	if r.LeaderLeaseTimeout <= 0 || r.LeaderLeaseTimeout > r.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("raft timing: leader lease (%v) must be positive and not above the heartbeat timeout (%v)", r.LeaderLeaseTimeout, r.HeartbeatTimeout))
	}
	if err := c.Beats.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Checker.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.TLS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.WatchHistory < 1 || c.MaxWatchers < 1 {
		errs = append(errs, fmt.Errorf("watch history (%d) and max watchers (%d) must be at least 1", c.WatchHistory, c.MaxWatchers))
	}
	if sweep := c.Checker.MaxSuspectsPerSweep + c.Checker.MaxExpiriesPerSweep; c.WatchHistory > 0 && c.WatchHistory < sweep {
		errs = append(errs, fmt.Errorf("watch history (%d) must hold one expiry sweep's events (%d SUSPECT marks + %d expiries = %d): with less, a large sweep turns every watch into a reset",
			c.WatchHistory, c.Checker.MaxSuspectsPerSweep, c.Checker.MaxExpiriesPerSweep, sweep))
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := acl.ParseDefault(c.ACLDefaultPolicy); err != nil {
		errs = append(errs, fmt.Errorf("acl default policy: %w", err))
	}
	if err := c.DNS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.PeerWait.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("peer wait: %w", err))
	}
	errs = append(errs, c.udpBeatErrors()...)
	return errors.Join(errs...)
}
