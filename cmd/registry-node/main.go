// Command registry-node runs one node of the registry. See --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/regcenter/registry/dnsserver"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/faultinject"
	"github.com/regcenter/registry/tlsutil"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // the node failed while running
	exitUsage   = 2 // a start-up problem: bad flag, port in use, unusable data dir
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// options are the command line, each flag also read from REGISTRY_<NAME>.
type options struct {
	nodeID, dataDir              string
	raftAddr, raftAdvertise      string
	grpcAddr, httpAddr           string
	grpcAdvertise, httpAdvertise string
	consulAddr                   string
	bootstrapPeers, join         string
	logLevel, logFormat          string
	failoverGrace, sweepInterval time.Duration
	guardShare                   float64
	guardMin                     int
	maxWatchers                  int
	enablePprof                  bool
	readReplica                  bool
	aclEnabled                   bool
	aclDefaultPolicy             string
	aclToken                     string
	aclTokenFile, aclInitialFile string
	testFaults                   bool
	testClockOffset              time.Duration
	raft                         node.RaftTiming
	tls                          tlsutil.Config
	limits                       node.Limits
	allowedOrigins, allowedHosts string
	dns                          dnsserver.Config
	udpBeatAddr                  string
}

func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("registry-node", flag.ContinueOnError)
	// Every default is node.DefaultConfig's (and so its components').
	d := node.DefaultConfig()
	str := func(p *string, name, def, usage string) {
		fs.StringVar(p, name, def, usage+" (env "+envName(name)+")")
	}
	str(&o.nodeID, "node-id", "", "this node's id, unique in the cluster: 1-128 characters of [A-Za-z0-9._:-] (required)")
	str(&o.dataDir, "data-dir", "", "directory for the Raft log, stable store and snapshots (required)")
	str(&o.raftAddr, "raft-addr", d.RaftAddr, "Raft bind address")
	str(&o.raftAdvertise, "raft-advertise", "", "Raft address the other nodes dial (default: --raft-addr)")
	str(&o.grpcAddr, "grpc-addr", d.GRPCAddr, "gRPC API address")
	str(&o.grpcAdvertise, "grpc-advertise", "", "gRPC address other nodes and clients reach this node at (default: --grpc-addr)")
	str(&o.httpAddr, "http-addr", d.HTTPAddr, "HTTP address for the JSON API, /metrics, /healthz, /readyz and Prometheus service discovery; empty disables it")
	str(&o.httpAdvertise, "http-advertise", "", "HTTP address others reach this node at (default: --http-addr)")
	str(&o.consulAddr, "consul-addr", "", "address for the Consul-compatible HTTP API (e.g. 127.0.0.1:8500; README, \"Consul-compatible API\"); empty (the default) disables it")
	str(&o.bootstrapPeers, "bootstrap-peers", "", "initial cluster as id=raft-host:port,...; the same list on every node; used only when the data dir is empty")
	str(&o.join, "join", "", "gRPC address of a cluster member to join as a voter (or, with --read-replica, a read replica), when the data dir is empty")
	fs.BoolVar(&o.readReplica, "read-replica", false, "with --join, join as a read replica (a Raft non-voter): serve reads, watches and beats, never vote or lead (env "+envName("read-replica")+")")
	str(&o.udpBeatAddr, "udp-beat-addr", d.UDPBeatAddr, "UDP address that takes authenticated beat datagrams (README, \"UDP beats\"); empty disables it")
	def := d.Checker
	fs.DurationVar(&o.sweepInterval, "sweep-interval", def.SweepInterval, "how often the leader's expiry checker looks for missed beats (env "+envName("sweep-interval")+")")
	fs.DurationVar(&o.failoverGrace, "failover-grace", def.FailoverGrace, "after a leader change, the time (plus each instance's beat interval) before any instance may be suspected or removed (env "+envName("failover-grace")+")")
	fs.Float64Var(&o.guardShare, "expiry-guard-share", def.GuardShare, "the mass-expiry guard holds expiries when more than this share of the live instances would expire (env "+envName("expiry-guard-share")+")")
	fs.IntVar(&o.guardMin, "expiry-guard-min", def.GuardMinCount, "the guard also needs more than this many instances to expire (env "+envName("expiry-guard-min")+")")
	fs.IntVar(&o.maxWatchers, "max-watchers", d.MaxWatchers, "concurrent watches this node serves, from all clients together (env "+envName("max-watchers")+")")
	rt := d.Raft
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, usage+" (env "+envName(name)+")")
	}
	dur(&o.raft.HeartbeatTimeout, "raft-heartbeat-timeout", rt.HeartbeatTimeout, "how long a follower goes without hearing from the leader before it starts an election (hashicorp/raft HeartbeatTimeout; a random extra of up to the same again is added)")
	dur(&o.raft.ElectionTimeout, "raft-election-timeout", rt.ElectionTimeout, "how long a candidate waits for votes before it starts another election")
	dur(&o.raft.LeaderLeaseTimeout, "raft-leader-lease-timeout", rt.LeaderLeaseTimeout, "how long a leader keeps leading without hearing from a quorum; at most --raft-heartbeat-timeout")
	dur(&o.raft.CommitTimeout, "raft-commit-timeout", rt.CommitTimeout, "how long the leader waits before it sends an idle heartbeat carrying the commit index")
	dur(&o.raft.SnapshotInterval, "snapshot-interval", rt.SnapshotInterval, "how often the node checks whether it should snapshot its state and compact the log")
	fs.Uint64Var(&o.raft.SnapshotThreshold, "snapshot-threshold", rt.SnapshotThreshold, "log entries since the last snapshot above which the node snapshots (env "+envName("snapshot-threshold")+")")
	fs.Uint64Var(&o.raft.TrailingLogs, "trailing-logs", rt.TrailingLogs, "log entries kept after a snapshot, so that a briefly lagging follower catches up from the log rather than a snapshot (env "+envName("trailing-logs")+")")
	fs.IntVar(&o.raft.MaxAppendEntries, "raft-max-append-entries", rt.MaxAppendEntries, "log entries one AppendEntries carries at most (1-1024): a follower that lags catches up in rounds of this many")
	limitFlags(fs, &o.limits, &o.allowedOrigins, &o.allowedHosts, d.Limits)
	fs.BoolVar(&o.enablePprof, "enable-pprof", false, "serve Go's profiles (net/http/pprof) under /debug/pprof/ on --http-addr; anyone who reaches that address can take them (env "+envName("enable-pprof")+")")
	fs.BoolVar(&o.testFaults, "test-fault-injection", false, "TEST ONLY, never in production: wrap the Raft transport so that POST /debug/faults on --http-addr can drop Raft traffic to and from chosen peers (env "+envName("test-fault-injection")+")")
	fs.DurationVar(&o.testClockOffset, "test-clock-offset", 0, "TEST ONLY, never in production: add this offset to the clock that stamps commands and drives the expiry checker (env "+envName("test-clock-offset")+")")
	addTLSFlags(fs, str, &o.tls)
	addDNSFlags(fs, str, &o.dns, d.DNS)
	fs.BoolVar(&o.aclEnabled, "acl-enabled", d.ACLEnabled, "require an ACL token (Authorization: Bearer <secret>) on every call but health checks and the one-time ACL bootstrap (env "+envName("acl-enabled")+")")
	str(&o.aclDefaultPolicy, "acl-default-policy", d.ACLDefaultPolicy, "with --acl-enabled, what a token may do where none of its rules matches: deny or allow")
	str(&o.aclToken, "acl-token", "", "with --acl-enabled, the secret of a token with operator:write that this node sends when it joins and publishes its addresses (prefer the env variable: a flag shows in the process list)")
	str(&o.aclTokenFile, "acl-token-file", "", "with --acl-enabled, a file holding the --acl-token secret (read at start; overrides --acl-token)")
	str(&o.aclInitialFile, "acl-initial-management-token-file", "", "with --acl-enabled, a file holding the secret of the first management token: the leader bootstraps the ACLs with it if they are not yet bootstrapped (the same file on every server)")
	str(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	str(&o.logFormat, "log-format", "text", "log format: text or json")
	return fs
}

func envName(flagName string) string {
	return "REGISTRY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse reads the environment, then the command line, which wins.
func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := newFlagSet(o)
	fs.SetOutput(io.Discard)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s: %v", envName(f.Name), err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintf(stderr, "Usage: registry-node [flags]\n       registry-node health [--http-addr ADDR | --url URL]\n\nRuns one node of the Raft-replicated service registry; \"health\" checks one (see registry-node health --help).\n\nFlags:\n")
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return o, nil
}

func newLogger(o *options, w io.Writer) (*slog.Logger, slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), level, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), level, nil
	default:
		return nil, 0, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
	}
}

func (o *options) nodeConfig(log *slog.Logger, level slog.Level) (node.Config, error) {
	if o.nodeID == "" {
		return node.Config{}, errors.New("--node-id is required")
	}
	if o.dataDir == "" {
		return node.Config{}, errors.New("--data-dir is required")
	}
	peers, err := node.ParsePeers(o.bootstrapPeers)
	if err != nil {
		return node.Config{}, fmt.Errorf("--bootstrap-peers: %v", err)
	}
	cfg := node.DefaultConfig()
	cfg.NodeID = o.nodeID
	cfg.DataDir = o.dataDir
	cfg.RaftAddr, cfg.RaftAdvertise = o.raftAddr, o.raftAdvertise
	cfg.GRPCAddr, cfg.GRPCAdvertise = o.grpcAddr, o.grpcAdvertise
	cfg.HTTPAddr, cfg.HTTPAdvertise = o.httpAddr, o.httpAdvertise
	cfg.ConsulAddr = o.consulAddr
	cfg.BootstrapPeers = peers
	cfg.Join = o.join
	cfg.ReadReplica = o.readReplica
	cfg.UDPBeatAddr = o.udpBeatAddr
	cfg.Raft = o.raft
	cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.CAFile = o.tls.CertFile, o.tls.KeyFile, o.tls.CAFile
	cfg.TLS.ClientAuth = o.tls.ClientAuth
	cfg.TLS.ReloadInterval = o.tls.ReloadInterval
	if cfg.TLS.ReloadInterval <= 0 {
		cfg.TLS.ReloadInterval = -1 // off; zero would mean the default
	}
	cfg.Checker.SweepInterval = o.sweepInterval
	cfg.Checker.FailoverGrace = o.failoverGrace
	cfg.Checker.GuardShare = o.guardShare
	cfg.Checker.GuardMinCount = o.guardMin
	cfg.MaxWatchers = o.maxWatchers
	cfg.Limits = o.limits
	cfg.Limits.HTTPAllowedOrigins, cfg.Limits.HTTPAllowedHosts = splitList(o.allowedOrigins), splitList(o.allowedHosts)
	cfg.ACLEnabled, cfg.ACLDefaultPolicy, cfg.ACLToken = o.aclEnabled, o.aclDefaultPolicy, o.aclToken
	if err := o.readTokenFiles(&cfg); err != nil {
		return node.Config{}, err
	}
	cfg.DNS.Addr, cfg.DNS.Domain, cfg.DNS.TTL = o.dns.Addr, o.dns.Domain, o.dns.TTL
	if o.enablePprof {
		if o.httpAddr == "" {
			return node.Config{}, errors.New("--enable-pprof needs --http-addr")
		}
		cfg.EnablePprof = true
	}
	if o.testFaults {
		if o.httpAddr == "" {
			return node.Config{}, errors.New("--test-fault-injection needs --http-addr for its control endpoint")
		}
		var ft *faultinject.Transport
		cfg.WrapRaftTransport = func(tr raft.Transport) raft.Transport {
			ft = faultinject.Wrap(tr)
			return ft
		}
		cfg.DebugHandlers = map[string]http.Handler{
			"/debug/faults": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if ft == nil {
					http.Error(w, "no raft transport yet", http.StatusServiceUnavailable)
					return
				}
				ft.Handler().ServeHTTP(w, r)
			}),
		}
		log.Warn("TEST-ONLY fault injection is on: POST /debug/faults drops Raft traffic")
	}
	if off := o.testClockOffset; off != 0 {
		cfg.Clock = func() time.Time { return time.Now().Add(off) }
		log.Warn("TEST-ONLY clock offset is on", "offset", off)
	}
	cfg.Logger = log
	cfg.RaftLogLevel = max(level, slog.LevelWarn)
	if level <= slog.LevelDebug {
		cfg.RaftLogLevel = level
	}
	return cfg, nil
}

func run(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "health" {
		return health(args[1:], stderr)
	}
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "registry-node: %v (see registry-node --help)\n", err)
		return exitUsage
	}
	log, level, err := newLogger(o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "registry-node: %v\n", err)
		return exitUsage
	}
	cfg, err := o.nodeConfig(log, level)
	if err != nil {
		fmt.Fprintf(stderr, "registry-node: %v (see registry-node --help)\n", err)
		return exitUsage
	}
	n, err := node.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "registry-node: %s\n", oneLine(err))
		return exitUsage
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	s := <-sig
	for ; s == syscall.SIGHUP; s = <-sig {
		reloadTLS(n, log)
	}
	log.Info("stopping", "signal", s.String())
	signal.Stop(sig)
	if err := n.Shutdown(context.Background()); err != nil {
		log.Error("shutdown", "error", err)
		return exitFailure
	}
	return exitOK
}

// oneLine joins a multi-error's lines, so that a start-up problem prints
// as one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// addTLSFlags adds --tls-cert, --tls-key, --tls-ca, --tls-client-auth and
// --tls-reload-interval.
func addTLSFlags(fs *flag.FlagSet, str func(p *string, name, def, usage string), c *tlsutil.Config) {
	str(&c.CertFile, "tls-cert", "", "this node's certificate (PEM; from registryctl tls cert create --server); with --tls-key and --tls-ca, every port and node-to-node connection uses TLS. Re-read when it changes or on SIGHUP")
	str(&c.KeyFile, "tls-key", "", "the key of --tls-cert (PEM)")
	str(&c.CAFile, "tls-ca", "", "the CA certificate (PEM) that clients' and nodes' certificates must chain to")
	str(&c.ClientAuth, "tls-client-auth", tlsutil.DefaultConfig().ClientAuth, "client certificates on the gRPC and HTTP ports: require, verify-if-given or none (nodes always require one from each other)")
	fs.DurationVar(&c.ReloadInterval, "tls-reload-interval", tlsutil.DefaultConfig().ReloadInterval, "how often the node checks whether the --tls-* files changed; 0 turns the checks off (SIGHUP only) (env "+envName("tls-reload-interval")+")")
}

// reloadTLS re-reads the TLS files (on SIGHUP).
func reloadTLS(n *node.Node, log *slog.Logger) {
	if err := n.ReloadTLS(); err != nil {
		log.Error("reloading tls files; the previous ones stay in use", "error", err)
	}
}
