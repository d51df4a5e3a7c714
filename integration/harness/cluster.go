package harness

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/regcenter/registry/acl"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/internal/proc"
)

// Fixed port bases, below the kernel's ephemeral range (32768-60999) so that
// no outgoing connection can take them. Node i (0-based) uses base+1+i.
const (
	grpcPortBase = 17000
	raftPortBase = 17100
	httpPortBase = 17200
	maxNodes     = 99
)

// logTailLines is how much of each node's log a failed test prints.
const logTailLines = 60

// Options configure a Cluster. The zero value is a three-node cluster.
type Options struct {
	// Nodes is the number of nodes, all bootstrapped as voters. Default 3.
	Nodes int
	// Env is added to every node's environment ("KEY=value"). The inherited
	// environment is passed without its REGISTRY_* variables, so that only
	// the test configures the nodes.
	Env []string
	// ExtraArgs are appended to every node's flags.
	ExtraArgs []string
	// LogLevel is --log-level. Default "info".
	LogLevel string
	// LogFormat is --log-format. Default "text".
	LogFormat string
	// Binary is the registry-node to run. Default: Build(t).
	Binary string
	// ReadyTimeout bounds the wait for a started process to answer. Default 20 s.
	ReadyTimeout time.Duration
	// StopTimeout is how long a SIGTERMed process may take to exit before it
	// is SIGKILLed, in Stop and in the cleanup. Default 10 s.
	StopTimeout time.Duration
	// LeaderTimeout bounds WaitLeader when ctx has no sooner deadline.
	// Default 15 s.
	LeaderTimeout time.Duration
	// ApplyTimeout bounds WaitApplied when ctx has no sooner deadline.
	// Default 15 s.
	ApplyTimeout time.Duration
	// SkipReady makes Start return as soon as the processes are started,
	// without waiting for them to answer (for start-up failure tests).
	SkipReady bool
	// FaultInjection starts every node with --test-fault-injection, for
	// Cluster.Partition, Isolate, Heal and Node.SetFaults.
	FaultInjection bool
	// ClockOffsets starts the named nodes with --test-clock-offset: their
	// clock (which stamps their commands and drives their expiry checker
	// when they lead) is ahead (positive) or behind by the offset.
	ClockOffsets map[string]time.Duration
	// AllowUnexpectedExit stops the cleanup from failing the test when a
	// process exited without being killed or stopped by the harness.
	AllowUnexpectedExit bool
	// TLS creates a CA (Cluster.CA) and starts every node with a node
	// certificate of it (--tls-*, with the default --tls-client-auth
	// require); the harness's connections present a client certificate
	// (and so does its HTTPS client, for the fault control endpoint).
	TLS bool
	// ACL starts every node with --acl-enabled and the harness's management
	// token as its --acl-token, bootstraps the ACLs with that token once a
	// leader exists (see acl.go), and makes every harness connection
	// (RegistryClient, ClusterClient, Status, Beater, EventRecorder, Dial)
	// carry it. Node.DialToken dials with another token or none.
	ACL bool
	// Spare is the number of port slots after the Nodes bootstrapped ones
	// that Start also checks are free, for the nodes Cluster.AddNode adds.
	Spare int
	// Interfaces starts every node with --dns-addr, --consul-addr and
	// --udp-beat-addr on fixed ports of its own (Node.DNSAddr, ConsulAddr,
	// UDPBeatAddr; see interfaces.go).
	Interfaces bool
}

func (o Options) withDefaults() Options {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.LogFormat == "" {
		o.LogFormat = "text"
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 20 * time.Second
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.LeaderTimeout == 0 {
		o.LeaderTimeout = 15 * time.Second
	}
	if o.ApplyTimeout == 0 {
		o.ApplyTimeout = 15 * time.Second
	}
	return o
}

// Cluster is a set of registry-node processes started by Start.
type Cluster struct {
	t      *testing.T
	ctx    context.Context // the test's context
	opts   Options
	binary string
	env    []string
	ip     string
	base   string  // holds each node's directory
	nodes  []*Node // the members started or added, in slot order

	mu      sync.Mutex
	procs   []*proc.Process    // every process ever started, for the cleanup
	conns   []*grpc.ClientConn // every connection ever opened, for the cleanup
	leader  *Node              // as of the last successful WaitLeader
	removed []*Node            // taken out by RemoveNode, kept for their logs
	// outsiders are started by StartOutsider; never members.
	outsiders []*Node
	done      bool // the cleanup has run

	tls  *clusterTLS // with Options.TLS
	mgmt acl.Secret  // the management token's secret, with Options.ACL

	faultMu sync.Mutex                // serialises fault changes
	blocked map[*Node]map[string]bool // node → peer ids it drops (Partition, Isolate)
}

// Start starts a cluster of opts.Nodes nodes on a loopback IP of its own and
// waits until every node answers (unless opts.SkipReady). The nodes are
// n1..nN with --bootstrap-peers listing all of them. A t.Cleanup stops every
// process the cluster ever starts and closes its connections; if the test
// failed, it logs the tail of each node's log.
func Start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	opts = opts.withDefaults()
	if opts.Nodes < 1 || opts.Spare < 0 || opts.Nodes+opts.Spare > maxNodes {
		t.Fatalf("harness: Options.Nodes = %d, Spare = %d: want 1..%d nodes in all", opts.Nodes, opts.Spare, maxNodes)
	}
	binary := opts.Binary
	if binary == "" {
		binary = Build(t)
	}
	ip, err := pickIP(opts.Nodes + opts.Spare)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	c := &Cluster{
		t:      t,
		ctx:    t.Context(),
		opts:   opts,
		binary: binary,
		env:    nodeEnv(opts.Env),
		ip:     ip,
	}
	// t.TempDir's own cleanup must run after c.cleanup has read the logs.
	c.base = t.TempDir()
	t.Cleanup(c.cleanup)
	if opts.TLS {
		if c.tls, err = newClusterTLS(filepath.Join(c.base, "client-tls")); err != nil {
			t.Fatalf("harness: %v", err)
		}
	}
	if opts.ACL {
		c.mgmt = acl.NewSecret()
		c.env = append(c.env, aclTokenEnv+"="+string(c.mgmt))
	}

	peers := make([]string, opts.Nodes)
	for i := range opts.Nodes {
		peers[i] = fmt.Sprintf("n%d=%s", i+1, hostPort(ip, raftPortBase+1+i))
	}
	for i := range opts.Nodes {
		n, err := c.newNode(i, "--bootstrap-peers="+strings.Join(peers, ","))
		if err != nil {
			t.Fatalf("harness: %v", err)
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := n.start(); err != nil {
			t.Fatalf("harness: %v", err)
		}
	}
	if !opts.SkipReady {
		if opts.ACL {
			if err := c.bootstrapACL(c.ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.waitReady(c.nodes); err != nil {
			t.Fatalf("harness: cluster did not start: %v", err)
		}
	}
	return c
}

// newNode prepares node n<slot+1> on the ports of slot (0-based) with its
// directory under c.base; how it finds the cluster (--bootstrap-peers or
// --join) is the caller's. It does not start it.
func (c *Cluster) newNode(slot int, membership string) (*Node, error) {
	n := &Node{
		cluster:  c,
		id:       fmt.Sprintf("n%d", slot+1),
		raftAddr: hostPort(c.ip, raftPortBase+1+slot),
		grpcAddr: hostPort(c.ip, grpcPortBase+1+slot),
		httpAddr: hostPort(c.ip, httpPortBase+1+slot),
	}
	n.dir = filepath.Join(c.base, n.id)
	n.dataDir = filepath.Join(n.dir, "data")
	n.logPath = filepath.Join(n.dir, "node.log")
	if err := os.MkdirAll(n.dataDir, 0o755); err != nil {
		return nil, err
	}
	n.args = append([]string{
		"--node-id=" + n.id,
		"--data-dir=" + n.dataDir,
		"--raft-addr=" + n.raftAddr,
		"--grpc-addr=" + n.grpcAddr,
		"--http-addr=" + n.httpAddr,
		membership,
		"--log-level=" + c.opts.LogLevel,
		"--log-format=" + c.opts.LogFormat,
	}, c.opts.ExtraArgs...)
	if c.opts.FaultInjection {
		n.args = append(n.args, "--test-fault-injection")
	}
	if off := c.opts.ClockOffsets[n.id]; off != 0 {
		n.args = append(n.args, "--test-clock-offset="+off.String())
	}
	tlsArgs, err := c.tlsArgs(n)
	if err != nil {
		return nil, err
	}
	n.args = append(n.args, tlsArgs...)
	n.args = append(n.args, c.aclArgs()...)
	n.args = append(n.args, c.interfaceArgs(n, slot)...)
	if n.conn, err = c.dial(n.grpcAddr); err != nil {
		return nil, err
	}
	return n, nil
}

// pickIP returns a random 127.a.b.c (a, b, c in 1..254) on which every port
// the cluster needs can be bound right now.
func pickIP(nodes int) (string, error) {
	const attempts = 50
	for range attempts {
		ip := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), 1+rand.IntN(254), 1+rand.IntN(254))
		if portsFree(ip, nodes) && interfacePortsFree(ip, nodes) {
			return ip, nil
		}
	}
	return "", fmt.Errorf("no loopback IP with free ports after %d attempts", attempts)
}

func portsFree(ip string, nodes int) bool {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for i := range nodes {
		for _, base := range []int{grpcPortBase, raftPortBase, httpPortBase} {
			l, err := net.Listen("tcp", hostPort(ip, base+1+i))
			if err != nil {
				return false
			}
			listeners = append(listeners, l)
		}
	}
	return true
}

func hostPort(ip string, port int) string {
	return net.JoinHostPort(ip, fmt.Sprint(port))
}

// nodeEnv is the inherited environment without REGISTRY_* (which the node
// reads as flags), followed by extra.
func nodeEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// dial opens a client connection that reconnects quickly after a restart
// and carries the management token with Options.ACL.
func (c *Cluster) dial(addr string) (*grpc.ClientConn, error) {
	return c.dialToken(addr, c.mgmt)
}

// dialToken is dial with the calls carrying secret, or no token for "".
func (c *Cluster) dialToken(addr string, secret acl.Secret) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.tls != nil {
		creds = c.tls.creds
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if o := tokenOption(secret); o != nil {
		opts = append(opts, o)
	}
	conn, err := grpc.NewClient(addr, append(opts,
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  20 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   500 * time.Millisecond,
			},
			MinConnectTimeout: time.Second,
		}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		conn.Close()
		return nil, errors.New("harness: cluster is cleaned up")
	}
	c.conns = append(c.conns, conn)
	return conn, nil
}

func (c *Cluster) track(p *proc.Process) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.procs = append(c.procs, p)
}

// logf logs through the test unless the test is over.
func (c *Cluster) logf(format string, args ...any) {
	c.t.Helper()
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if !done {
		c.t.Logf(format, args...)
	}
}

// cleanup stops every process ever started (SIGTERM, then SIGKILL after
// StopTimeout), closes every connection, reports processes that exited on
// their own, and prints log tails if the test failed.
func (c *Cluster) cleanup() {
	c.mu.Lock()
	procs := slices.Clone(c.procs)
	conns := slices.Clone(c.conns)
	c.mu.Unlock()

	var crashed []string
	for _, p := range procs {
		if p.Exited() && !p.Expected() {
			crashed = append(crashed, fmt.Sprintf("%s (pid %d): %v", p.Name(), p.PID(), p.State()))
		}
	}
	var wg sync.WaitGroup
	for _, p := range procs {
		if p.Exited() {
			continue
		}
		wg.Go(func() {
			if p.Stop(c.opts.StopTimeout) {
				c.t.Logf("harness: %s (pid %d) ignored SIGTERM for %v; sent SIGKILL", p.Name(), p.PID(), c.opts.StopTimeout)
			}
		})
	}
	wg.Wait()
	for _, conn := range conns {
		conn.Close()
	}
	if c.tls != nil {
		c.tls.http.CloseIdleConnections()
	}
	for _, p := range procs {
		if !p.Exited() {
			c.t.Errorf("harness: %s (pid %d) survives SIGKILL", p.Name(), p.PID())
		}
	}
	if len(crashed) > 0 && !c.opts.AllowUnexpectedExit {
		c.t.Errorf("harness: node processes exited on their own during the test: %s",
			strings.Join(crashed, "; "))
	}
	if dir := os.Getenv(LogDirEnv); dir != "" {
		c.keepLogs(dir)
	}
	if c.t.Failed() {
		for _, n := range c.everyNode() {
			c.t.Logf("--- %s: last %d lines of %s ---\n%s", n.id, logTailLines, n.logPath, n.LogTail(logTailLines))
		}
	}
	c.mu.Lock()
	c.done = true
	c.mu.Unlock()
}

// LogDirEnv names an environment variable that, when set, is a directory
// the cleanup copies every node's log into, as <test name>/<node id>.log,
// whether the test passed or not (for CI artifacts).
const LogDirEnv = "REGCENTER_TEST_LOG_DIR"

func (c *Cluster) keepLogs(dir string) {
	dir = filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(c.t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Logf("harness: keeping logs: %v", err)
		return
	}
	for _, n := range c.everyNode() {
		data, err := os.ReadFile(n.logPath)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, n.id+".log"), data, 0o644)
		}
		if err != nil {
			c.t.Logf("harness: keeping %s's log: %v", n.id, err)
		}
	}
}

// IP is the loopback address every node of the cluster listens on.
func (c *Cluster) IP() string { return c.ip }

// Nodes returns every node, in id order, whatever its state.
func (c *Cluster) Nodes() []*Node { return slices.Clone(c.nodes) }

// Node returns the node with the given id, or nil.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

// Running returns the nodes whose process is alive and not paused.
func (c *Cluster) Running() []*Node { return c.nodesWhere((*Node).Running) }

// nodesWhere returns the nodes for which keep is true, in order.
func (c *Cluster) nodesWhere(keep func(*Node) bool) []*Node {
	var out []*Node
	for _, n := range c.nodes {
		if keep(n) {
			out = append(out, n)
		}
	}
	return out
}

// Leader returns the leader found by the last successful WaitLeader, or nil
// if there was none or it is no longer running. It does not ask the cluster.
func (c *Cluster) Leader() *Node {
	c.mu.Lock()
	leader := c.leader
	c.mu.Unlock()
	if leader == nil || !leader.Running() {
		return nil
	}
	return leader
}

// Followers returns the running nodes other than the leader found by the last
// successful WaitLeader (every running node before the first one).
func (c *Cluster) Followers() []*Node {
	c.mu.Lock()
	leader := c.leader
	c.mu.Unlock()
	return c.nodesWhere(func(n *Node) bool { return n != leader && n.Running() })
}

// WaitLeader waits until every running node answers Status with the same
// leader id and term and knows the leader's gRPC address (so that it can
// forward), and that leader is one of them and says it is the leader. It
// remembers the leader for Leader and Followers. It waits at most
// Options.LeaderTimeout unless ctx ends sooner.
func (c *Cluster) WaitLeader(ctx context.Context) (*Node, error) {
	return c.waitLeader(ctx, nil)
}

// WaitLeaderAmong is WaitLeader over the given nodes only (for example the
// majority side of a partition).
func (c *Cluster) WaitLeaderAmong(ctx context.Context, nodes ...*Node) (*Node, error) {
	return c.waitLeader(ctx, nodes)
}

func (c *Cluster) waitLeader(ctx context.Context, among []*Node) (*Node, error) {
	ctx, cancel := poll.WithDefaultTimeout(ctx, c.opts.LeaderTimeout)
	defer cancel()
	var leader *Node
	err := poll.Until(ctx, func(ctx context.Context) error {
		nodes := among
		if nodes == nil {
			nodes = c.Running()
		}
		if len(nodes) == 0 {
			return errors.New("no running node")
		}
		var (
			leaderID string
			term     uint64
			views    []string
		)
		for _, n := range nodes {
			s, err := n.Status(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", n.id, err)
			}
			if s.GetNodeId() != n.id {
				return fmt.Errorf("%s answers as node %q", n.grpcAddr, s.GetNodeId())
			}
			views = append(views, fmt.Sprintf("%s: %s, leader %q at %q, term %d",
				n.id, s.GetRole(), s.GetLeaderId(), s.GetLeaderGrpcAddress(), s.GetTerm()))
			if s.GetLeaderId() == "" {
				return fmt.Errorf("no leader known: %s", strings.Join(views, "; "))
			}
			// Until then the node cannot forward to the leader.
			if s.GetLeaderGrpcAddress() == "" {
				return fmt.Errorf("leader's gRPC address not known: %s", strings.Join(views, "; "))
			}
			if leaderID == "" {
				leaderID, term = s.GetLeaderId(), s.GetTerm()
			} else if s.GetLeaderId() != leaderID || s.GetTerm() != term {
				return fmt.Errorf("nodes disagree: %s", strings.Join(views, "; "))
			}
			if s.GetNodeId() == leaderID && s.GetRole() != "leader" {
				return fmt.Errorf("%s is named leader but says it is %s", n.id, s.GetRole())
			}
		}
		i := slices.IndexFunc(nodes, func(n *Node) bool { return n.id == leaderID })
		if i < 0 {
			return fmt.Errorf("leader %s is not among the nodes asked: %s", leaderID, strings.Join(views, "; "))
		}
		leader = nodes[i]
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("harness: no agreed leader: %w", err)
	}
	c.mu.Lock()
	c.leader = leader
	c.mu.Unlock()
	return leader, nil
}

// WaitApplied waits until every running node's applied_index is at least
// index, for at most Options.ApplyTimeout unless ctx ends sooner.
func (c *Cluster) WaitApplied(ctx context.Context, index uint64) error {
	ctx, cancel := poll.WithDefaultTimeout(ctx, c.opts.ApplyTimeout)
	defer cancel()
	err := poll.Until(ctx, func(ctx context.Context) error {
		nodes := c.Running()
		if len(nodes) == 0 {
			return errors.New("no running node")
		}
		for _, n := range nodes {
			s, err := n.Status(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", n.id, err)
			}
			if s.GetAppliedIndex() < index {
				return fmt.Errorf("%s has applied %d, want %d", n.id, s.GetAppliedIndex(), index)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("harness: index %d not applied everywhere: %w", index, err)
	}
	return nil
}

// WaitSettled waits for a leader (see WaitLeader), then until every member
// of the leader's configuration has published its gRPC address and every
// running node has applied the leader's last log index, with no entry
// appended meanwhile. It returns that index: from then on the log grows only
// through the test's own writes. It waits at most Options.LeaderTimeout plus
// Options.ApplyTimeout unless ctx ends sooner.
func (c *Cluster) WaitSettled(ctx context.Context) (uint64, error) {
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		return 0, err
	}
	ctx, cancel := poll.WithDefaultTimeout(ctx, c.opts.ApplyTimeout)
	defer cancel()
	var index uint64
	err = poll.Until(ctx, func(ctx context.Context) error {
		first, err := leader.Status(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", leader.id, err)
		}
		if first.GetRole() != "leader" {
			return fmt.Errorf("%s is no longer the leader (%s)", leader.id, first.GetRole())
		}
		for _, m := range first.GetMembers() {
			if m.GetGrpcAddress() == "" {
				return fmt.Errorf("member %s has not published its gRPC address", m.GetId())
			}
		}
		for _, n := range c.Running() {
			s, err := n.Status(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", n.id, err)
			}
			if s.GetAppliedIndex() < first.GetLastLogIndex() {
				return fmt.Errorf("%s has applied %d, the leader's log ends at %d", n.id, s.GetAppliedIndex(), first.GetLastLogIndex())
			}
		}
		second, err := leader.Status(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", leader.id, err)
		}
		if second.GetLastLogIndex() != first.GetLastLogIndex() || second.GetTerm() != first.GetTerm() {
			return fmt.Errorf("leader's log still growing: %d, then %d", first.GetLastLogIndex(), second.GetLastLogIndex())
		}
		index = second.GetLastLogIndex()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("harness: cluster not settled: %w", err)
	}
	return index, nil
}

// KillAll SIGKILLs every alive node, concurrently.
func (c *Cluster) KillAll() error {
	_, err := c.KillAllAtOnce()
	return err
}

// KillAllAtOnce SIGKILLs every alive node, the signals sent back to back
// from one goroutine, then waits until every process is reaped. It returns
// the time from the first signal to the last: how nearly at once the
// nodes died, whatever the reaping takes on a loaded machine.
func (c *Cluster) KillAllAtOnce() (spread time.Duration, err error) {
	nodes := c.alive()
	procs := make([]*proc.Process, 0, len(nodes))
	var first, last time.Time
	for _, n := range nodes {
		p, err := n.live()
		if err != nil {
			return 0, err
		}
		p.Expect()
		now := time.Now()
		if err := p.Signal(syscall.SIGKILL); err != nil {
			return 0, fmt.Errorf("%s: kill pid %d: %w", n.id, p.PID(), err)
		}
		if first.IsZero() {
			first = now
		}
		last = now
		procs = append(procs, p)
	}
	for i, p := range procs {
		if !p.WaitFor(proc.ReapTimeout) {
			return 0, fmt.Errorf("%s: pid %d not reaped %v after SIGKILL", nodes[i].id, p.PID(), proc.ReapTimeout)
		}
		c.logf("%s: killed pid %d", nodes[i].id, p.PID())
	}
	return last.Sub(first), nil
}

// StopAll stops every alive node gracefully (see Node.Stop), concurrently.
func (c *Cluster) StopAll() error {
	return c.each(c.alive(), (*Node).Stop)
}

// RestartAll starts every node that has no live process, then waits until
// they all answer. Starting them all before waiting lets nodes that need a
// quorum to come up find one.
func (c *Cluster) RestartAll() error {
	var started []*Node
	for _, n := range c.nodes {
		if n.Alive() {
			continue
		}
		if err := n.start(); err != nil {
			return err
		}
		started = append(started, n)
	}
	return c.waitReady(started)
}

func (c *Cluster) alive() []*Node { return c.nodesWhere((*Node).Alive) }

func (c *Cluster) waitReady(nodes []*Node) error {
	return c.each(nodes, func(n *Node) error { return n.WaitReady(c.ctx) })
}

// each runs fn on every node concurrently and joins the errors.
func (c *Cluster) each(nodes []*Node, fn func(*Node) error) error {
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = fn(n) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
