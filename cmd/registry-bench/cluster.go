package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/internal/proc"
)

// Port offsets from --port-base: gRPC base+1+i, Raft base+101+i, HTTP
// base+201+i, DNS (UDP and TCP) base+301+i, UDP beats base+321+i. The default base (27000) is
// below the kernel's ephemeral range and apart from the integration tests'
// ports (17000+).
const (
	grpcOffset = 1
	raftOffset = 101
	httpOffset = 201
	dnsOffset  = 301
	udpOffset  = 321 // UDP beats (udp.go), base+321+i
)

// cluster is the registry under test: either three registry-node
// processes this command started (procs != nil), or the nodes named by
// --endpoints.
type cluster struct {
	endpoints []string
	nodes     []*nodeProc // nil with --endpoints
	dir       string      // the nodes' data and logs; removed by close
	args      []string    // the nodes' extra flags, for replicas started later

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// newNodeProc describes local node number i (its ports are portBase plus
// each port's offset plus i) with its data in dir/id and its log in
// dir/id.log: role holds the flags that make it a member of a new cluster
// or a joiner, extra the flags every node of the run gets.
func newNodeProc(id string, i int, binary, ip string, portBase int, dir string, role, extra []string) (*nodeProc, error) {
	data := filepath.Join(dir, id)
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	args := []string{
		"--node-id", id, "--data-dir", data,
		"--raft-addr", hostPort(ip, portBase+raftOffset+i),
		"--grpc-addr", hostPort(ip, portBase+grpcOffset+i),
		"--http-addr", hostPort(ip, portBase+httpOffset+i),
		"--dns-addr", hostPort(ip, portBase+dnsOffset+i),
		"--udp-beat-addr", hostPort(ip, portBase+udpOffset+i),
		"--log-level", "warn",
	}
	args = append(append(args, role...), extra...)
	return &nodeProc{
		id:       id,
		grpcAddr: hostPort(ip, portBase+grpcOffset+i),
		httpAddr: hostPort(ip, portBase+httpOffset+i),
		udpAddr:  hostPort(ip, portBase+udpOffset+i),
		spec:     proc.Spec{Name: id, Binary: binary, Env: nodeEnv(), LogPath: filepath.Join(dir, id+".log"), Args: args},
	}, nil
}

// nodeProc is one node; start runs it (again) with the same flags and
// data. The process itself is a proc.Process: it dies with this command.
type nodeProc struct {
	id, grpcAddr string
	httpAddr     string
	udpAddr      string // --udp-beat-addr
	spec         proc.Spec
	procs        proc.Slot
}

// externalCluster uses nodes someone else runs.
func externalCluster(endpoints []string) *cluster {
	return &cluster{endpoints: endpoints, conns: make(map[string]*grpc.ClientConn)}
}

// startCluster starts three nodes on ip with fresh data in a temporary
// directory and waits until they agree on a leader.
func startCluster(ctx context.Context, binary, ip string, portBase int, extra []string) (*cluster, error) {
	const n = 3
	for i := range n {
		for _, off := range []int{grpcOffset, raftOffset, httpOffset, dnsOffset} {
			addr := hostPort(ip, portBase+off+i)
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return nil, fmt.Errorf("port %s is not free (pick another --ip or --port-base): %w", addr, err)
			}
			l.Close()
		}
	}
	dir, err := os.MkdirTemp("", "registry-bench-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, conns: make(map[string]*grpc.ClientConn), args: extra}
	peers := make([]string, n)
	for i := range n {
		peers[i] = fmt.Sprintf("n%d=%s", i+1, hostPort(ip, portBase+raftOffset+i))
	}
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		p, err := newNodeProc(id, i, binary, ip, portBase, dir, []string{"--bootstrap-peers", strings.Join(peers, ",")}, extra)
		if err != nil {
			c.close()
			return nil, err
		}
		c.nodes = append(c.nodes, p)
		c.endpoints = append(c.endpoints, p.grpcAddr)
		if err := p.start(); err != nil {
			c.close()
			return nil, fmt.Errorf("starting %s: %w", id, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if sec != nil {
		// Until then the nodes refuse Status (and their own publication).
		if err := c.bootstrap(wctx); err != nil {
			c.close()
			return nil, err
		}
	}
	for _, p := range c.nodes {
		if err := c.waitReady(wctx, p); err != nil {
			c.close()
			return nil, err
		}
	}
	if _, err := c.waitLeader(wctx, c.endpoints); err != nil {
		c.close()
		return nil, fmt.Errorf("the cluster did not elect a leader: %w", err)
	}
	return c, nil
}

// waitReady waits until p answers Cluster.Status; it gives up with the
// tail of p's log if the process exits (the log is removed with the
// cluster's directory).
func (c *cluster) waitReady(ctx context.Context, p *nodeProc) error {
	cur, err := p.procs.Live()
	if err != nil {
		return fmt.Errorf("%s: %w", p.id, err)
	}
	err = cur.WaitReady(ctx, func(ctx context.Context) error {
		_, err := c.status(ctx, p.grpcAddr)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", p.id, err)
	}
	return nil
}

// nodeEnv is the nodes' environment: this program's (nil), plus the ACL
// token with -secure.
func nodeEnv() []string {
	if sec == nil {
		return nil
	}
	return append(os.Environ(), sec.env...)
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// start starts a new process for p (see proc.Start): the kernel kills it
// with SIGKILL if this command dies without stopping it.
func (p *nodeProc) start() error {
	_, err := p.procs.Start(p.spec)
	return err
}

// pid is the running process's id, or 0.
func (p *nodeProc) pid() int { return p.procs.PID() }

// kill sends SIGKILL and waits until the process is reaped; a node with
// no live process is left as it is.
func (p *nodeProc) kill() error {
	cur, err := p.procs.Live()
	if err != nil {
		return nil // nothing to kill
	}
	if err := cur.Kill(); err != nil && !errors.Is(err, proc.ErrNotRunning) {
		return fmt.Errorf("%s: %w", p.id, err)
	}
	return nil
}

// stop sends SIGTERM, waits up to grace, then kills.
func (p *nodeProc) stop(grace time.Duration) {
	if cur, err := p.procs.Live(); err == nil {
		cur.Stop(grace)
	}
}

// close stops every node this command started, closes the status
// connections and removes the data.
func (c *cluster) close() {
	var wg sync.WaitGroup
	for _, p := range c.nodes {
		wg.Go(func() { p.stop(3 * time.Second) })
	}
	wg.Wait()
	c.mu.Lock()
	for _, cc := range c.conns {
		cc.Close()
	}
	c.conns = map[string]*grpc.ClientConn{}
	c.mu.Unlock()
	if c.dir != "" && os.Getenv("REGISTRY_BENCH_KEEP_DATA") != "" {
		fmt.Fprintf(os.Stderr, "registry-bench: REGISTRY_BENCH_KEEP_DATA is set: the nodes' data and logs stay in %s\n", c.dir)
	} else if c.dir != "" {
		os.RemoveAll(c.dir)
	}
}

// conn returns a connection to addr for status calls.
func (c *cluster) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, dialOptions()...)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// status asks one node for Cluster.Status, within one second.
func (c *cluster) status(ctx context.Context, addr string) (*registryv1.StatusResponse, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return registryv1.NewClusterClient(cc).Status(ctx, &registryv1.StatusRequest{})
}

// errNoLeader: the nodes asked do not agree on a leader yet.
var errNoLeader = errors.New("no leader that every node asked agrees on")

// leader returns the gRPC address of the node of addrs that leads, if
// every node of addrs answers and names it with its address (a follower
// forwards writes only once it knows the leader's address).
func (c *cluster) leader(ctx context.Context, addrs []string) (string, error) {
	var leaderID, leaderAddr string
	for _, a := range addrs {
		st, err := c.status(ctx, a)
		if err != nil {
			return "", err
		}
		if st.LeaderId == "" || st.LeaderGrpcAddress == "" || (leaderID != "" && st.LeaderId != leaderID) {
			return "", errNoLeader
		}
		leaderID = st.LeaderId
		if st.Role == "leader" {
			leaderAddr = a
		}
	}
	if leaderAddr == "" {
		return "", errNoLeader
	}
	return leaderAddr, nil
}

// waitLeader polls until the nodes of addrs agree on a leader among them.
func (c *cluster) waitLeader(ctx context.Context, addrs []string) (string, error) {
	var leader string
	err := poll.Until(ctx, func(ctx context.Context) error {
		l, err := c.leader(ctx, addrs)
		leader = l
		return err
	})
	return leader, err
}

// node returns the started node serving gRPC on addr, or nil.
func (c *cluster) node(addr string) *nodeProc {
	for _, p := range c.nodes {
		if p.grpcAddr == addr {
			return p
		}
	}
	return nil
}

// procStat is a process's CPU time and resident memory, from /proc.
type procStat struct {
	cpu time.Duration
	rss int64 // bytes
}

// clockTicks is USER_HZ, 100 on every Linux platform Go supports.
const clockTicks = 100

func readProcStat(pid int) (procStat, error) {
	var s procStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name is in parentheses and may hold spaces: the fields
	// after it start at the last ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	s.cpu = time.Duration(utime+stime) * time.Second / clockTicks
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			s.rss = kb << 10
		}
	}
	return s, nil
}

// startReplicas starts n read replicas of a cluster this command started:
// registry-node --read-replica --join the first node, with the
// voters' extra flags, on the ports after the voters' (node 4, 5, ...).
// They are added to c.nodes (sampled and stopped with the voters) and
// their gRPC addresses returned; it waits until each answers Status.
func (c *cluster) startReplicas(ctx context.Context, n int, binary, ip string, portBase int) ([]string, error) {
	if len(c.nodes) == 0 {
		return nil, errors.New("replicas need a cluster this command started, not --endpoints")
	}
	var addrs []string
	for k := range n {
		i := 3 + k
		id := fmt.Sprintf("r%d", k+1)
		p, err := newNodeProc(id, i, binary, ip, portBase, c.dir, []string{"--join", c.endpoints[0], "--read-replica"}, c.args)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, p)
		if err := p.start(); err != nil {
			return nil, fmt.Errorf("starting replica %s: %w", id, err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = c.waitReady(wctx, p)
		cancel()
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, p.grpcAddr)
	}
	return addrs, nil
}
