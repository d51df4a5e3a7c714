package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

// Port offsets from --port-base: gRPC base+1+i, Raft base+101+i, HTTP
// base+201+i. The default base (27000) is below the kernel's ephemeral
// range and apart from the integration tests' ports (17000+).
const (
	grpcOffset = 1
	raftOffset = 101
	httpOffset = 201
)

// cluster is the registry under test: either three registry-node
// processes this command started (procs != nil), or the nodes named by
// --endpoints.
type cluster struct {
	endpoints []string
	nodes     []*nodeProc // nil with --endpoints
	dir       string      // the nodes' data and logs; removed by close

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// nodeProc is one node process; restart starts it again with the same
// flags and data.
type nodeProc struct {
	id, grpcAddr, logPath string
	httpAddr              string
	binary                string
	args                  []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed once the process is reaped
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
		for _, off := range []int{grpcOffset, raftOffset, httpOffset} {
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
	c := &cluster{dir: dir, conns: make(map[string]*grpc.ClientConn)}
	peers := make([]string, n)
	for i := range n {
		peers[i] = fmt.Sprintf("n%d=%s", i+1, hostPort(ip, portBase+raftOffset+i))
	}
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		data := filepath.Join(dir, id)
		if err := os.MkdirAll(data, 0o755); err != nil {
			c.close()
			return nil, err
		}
		p := &nodeProc{
			id:       id,
			grpcAddr: hostPort(ip, portBase+grpcOffset+i),
			httpAddr: hostPort(ip, portBase+httpOffset+i),
			logPath:  filepath.Join(dir, id+".log"),
			binary:   binary,
			args: append([]string{
				"--node-id", id, "--data-dir", data,
				"--raft-addr", hostPort(ip, portBase+raftOffset+i),
				"--grpc-addr", hostPort(ip, portBase+grpcOffset+i),
				"--http-addr", hostPort(ip, portBase+httpOffset+i),
				"--bootstrap-peers", strings.Join(peers, ","),
				"--log-level", "warn",
			}, extra...),
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
	if _, err := c.waitLeader(wctx, c.endpoints); err != nil {
		c.close()
		return nil, fmt.Errorf("the cluster did not elect a leader: %w (logs were in %s)", err, dir)
	}
	return c, nil
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// start starts the process; the kernel kills it with SIGKILL if this
// command dies without stopping it (see spawn).
func (p *nodeProc) start() error {
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(p.binary, p.args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := spawn(cmd); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return nil
}

// pid is the running process's id, or 0.
func (p *nodeProc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// kill sends SIGKILL and waits until the process is reaped.
func (p *nodeProc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// stop sends SIGTERM, waits up to grace, then kills.
func (p *nodeProc) stop(grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		p.kill()
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
	if c.dir != "" {
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
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
	for {
		l, err := c.leader(ctx, addrs)
		if err == nil {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
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

// On Linux, Pdeathsig fires when the thread that forked the child exits,
// not the process: every node is forked from one goroutine locked to its
// thread that never returns, so the nodes die with this command however
// it ends (a panic, SIGKILL), besides the orderly stop at exit.
var spawner struct {
	once     sync.Once
	requests chan spawnRequest
}

type spawnRequest struct {
	cmd    *exec.Cmd
	result chan error
}

func spawn(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.requests = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread()
			for r := range spawner.requests {
				r.result <- r.cmd.Start()
			}
		}()
	})
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	res := make(chan error, 1)
	spawner.requests <- spawnRequest{cmd: cmd, result: res}
	return <-res
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
