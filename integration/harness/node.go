package harness

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/internal/proc"
	"github.com/regcenter/registry/tlsutil"
)

// statusTimeout bounds one Status call made by the harness, so that a paused
// or wedged node cannot stall a poll.
const statusTimeout = 2 * time.Second

// Node is one node of a Cluster: an id, its addresses, its data directory and
// its flags, run by at most one process at a time.
type Node struct {
	cluster  *Cluster
	id       string
	dir      string // holds the data directory and the log
	dataDir  string
	logPath  string
	raftAddr string
	grpcAddr string
	httpAddr string
	args     []string
	conn     *grpc.ClientConn // cached; survives restarts
	tlsFiles tlsutil.Config   // with Options.TLS
	ifaces   interfaceAddrs   // with Options.Interfaces

	procs proc.Slot // the current or last process

	mu     sync.Mutex
	paused bool // set by Pause; Start and Resume clear it
}

// ID is the node's --node-id.
func (n *Node) ID() string { return n.id }

// String returns the node id.
func (n *Node) String() string { return n.id }

// GRPCAddr is the host:port the node serves gRPC on.
func (n *Node) GRPCAddr() string { return n.grpcAddr }

// RaftAddr is the host:port of the node's Raft transport.
func (n *Node) RaftAddr() string { return n.raftAddr }

// HTTPAddr is the host:port of the node's metrics and health endpoint.
func (n *Node) HTTPAddr() string { return n.httpAddr }

// DataDir is the node's --data-dir; it survives restarts.
func (n *Node) DataDir() string { return n.dataDir }

// LogPath is the file that every process of the node appends its stdout and
// stderr to.
func (n *Node) LogPath() string { return n.logPath }

// Args returns the command-line arguments every process of the node gets.
func (n *Node) Args() []string { return slices.Clone(n.args) }

// LogTail returns the last lines of the node's log.
func (n *Node) LogTail(lines int) string { return proc.TailFile(n.logPath, lines) }

func (n *Node) current() *proc.Process { return n.procs.Current() }

// PID is the pid of the node's live process, or 0 if it has none.
func (n *Node) PID() int { return n.procs.PID() }

// Alive reports whether the node has a process that has not exited; a paused
// process is alive.
func (n *Node) Alive() bool {
	p := n.current()
	return p != nil && !p.Exited()
}

// Paused reports whether the node's process is stopped by Pause.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused && n.Alive()
}

// Running reports whether the node has a live process that is not paused,
// that is one that can answer.
func (n *Node) Running() bool { return n.Alive() && !n.Paused() }

// ExitState is the exit status of the node's last process, or nil while it
// runs or if it never ran.
func (n *Node) ExitState() *os.ProcessState {
	p := n.current()
	if p == nil || !p.Exited() {
		return nil
	}
	return p.State()
}

// live returns the live process or ErrNotRunning.
func (n *Node) live() (*proc.Process, error) {
	p, err := n.procs.Live()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.id, err)
	}
	return p, nil
}

// start starts a new process for the node; it does not wait for it to serve.
func (n *Node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, err := n.procs.Start(proc.Spec{Name: n.id, Binary: n.cluster.binary, Args: n.args, Env: n.cluster.env, LogPath: n.logPath})
	if err != nil {
		return fmt.Errorf("%s: start: %w", n.id, err)
	}
	n.paused = false
	n.cluster.track(p)
	// The connection may be backing off from the previous process.
	n.conn.ResetConnectBackoff()
	n.cluster.logf("%s: started pid %d (grpc %s, raft %s)", n.id, p.PID(), n.grpcAddr, n.raftAddr)
	return nil
}

// Kill sends SIGKILL to the node's process and waits until it is reaped.
func (n *Node) Kill() error {
	p, err := n.live()
	if err != nil {
		return err
	}
	if err := p.Kill(); err != nil {
		return fmt.Errorf("%s: %w", n.id, err)
	}
	n.cluster.logf("%s: killed pid %d", n.id, p.PID())
	return nil
}

// Stop stops the node gracefully: SIGTERM (after SIGCONT if paused), then
// SIGKILL if it has not exited within Options.StopTimeout. It returns an
// error wrapping ErrStopTimeout if SIGKILL was needed and ErrUncleanExit if
// the process exited with a non-zero status.
func (n *Node) Stop() error {
	p, err := n.live()
	if err != nil {
		return err
	}
	begin := time.Now()
	grace := n.cluster.opts.StopTimeout
	if p.Stop(grace) {
		return fmt.Errorf("%s: pid %d: %w: still running %v after SIGTERM, sent SIGKILL",
			n.id, p.PID(), ErrStopTimeout, grace)
	}
	if st := p.State(); st.ExitCode() != 0 {
		return fmt.Errorf("%s: pid %d: %w: %v", n.id, p.PID(), ErrUncleanExit, st)
	}
	n.cluster.logf("%s: stopped pid %d in %v", n.id, p.PID(), time.Since(begin).Round(time.Millisecond))
	return nil
}

// Pause stops the node's process with SIGSTOP: it keeps its sockets but
// answers nothing, like a node in a long GC pause or a frozen VM.
func (n *Node) Pause() error { return n.setPaused(syscall.SIGSTOP, "SIGSTOP", true) }

// Resume continues a paused process with SIGCONT.
func (n *Node) Resume() error { return n.setPaused(syscall.SIGCONT, "SIGCONT", false) }

// setPaused sends sig (SIGSTOP or SIGCONT, named name) to the live process
// and records whether it is now paused.
func (n *Node) setPaused(sig syscall.Signal, name string, paused bool) error {
	p, err := n.live()
	if err != nil {
		return err
	}
	if err := p.Signal(sig); err != nil {
		return fmt.Errorf("%s: %s pid %d: %w", n.id, name, p.PID(), err)
	}
	n.mu.Lock()
	n.paused = paused
	n.mu.Unlock()
	return nil
}

// Restart starts a new process with the same flags and data directory and
// waits until it answers (see WaitReady). The previous process must have
// exited: Kill or Stop it first.
func (n *Node) Restart() error {
	if err := n.start(); err != nil {
		return err
	}
	return n.WaitReady(n.cluster.ctx)
}

// WaitReady waits until the node's process answers Cluster.Status with its
// own node id, for at most Options.ReadyTimeout. It fails early, with the
// tail of the log, if the process exits.
func (n *Node) WaitReady(ctx context.Context) error {
	p, err := n.live()
	if err != nil {
		return err
	}
	ctx, cancel := poll.WithDefaultTimeout(ctx, n.cluster.opts.ReadyTimeout)
	defer cancel()
	err = p.WaitReady(ctx, func(ctx context.Context) error {
		s, err := n.Status(ctx)
		if err != nil {
			return err
		}
		if s.GetNodeId() != n.id {
			return fmt.Errorf("%s answers as node %q", n.grpcAddr, s.GetNodeId())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", n.id, err)
	}
	return nil
}

// Conn is the node's cached client connection (plaintext, or TLS with
// Options.TLS; quick reconnect backoff). It survives restarts and is closed by the cluster's cleanup; do
// not close it.
func (n *Node) Conn() *grpc.ClientConn { return n.conn }

// RegistryClient is a registry.v1.Registry client on Conn.
func (n *Node) RegistryClient() registryv1.RegistryClient {
	return registryv1.NewRegistryClient(n.conn)
}

// ClusterClient is a registry.v1.Cluster client on Conn.
func (n *Node) ClusterClient() registryv1.ClusterClient {
	return registryv1.NewClusterClient(n.conn)
}

// Dial opens a new client connection to the node, for tests that need
// several. The cluster's cleanup closes it; closing it earlier is fine.
func (n *Node) Dial() (*grpc.ClientConn, error) {
	return n.cluster.dial(n.grpcAddr)
}

// Status calls Cluster.Status on the node, bounded by 2 s unless ctx ends
// sooner.
func (n *Node) Status(ctx context.Context) (*registryv1.StatusResponse, error) {
	ctx, cancel := poll.WithDefaultTimeout(ctx, statusTimeout)
	defer cancel()
	return n.ClusterClient().Status(ctx, &registryv1.StatusRequest{})
}

// StateHash asks the node for the hash of its replica and the applied index
// it was taken at (Cluster.Status with include_state_hash).
func (n *Node) StateHash(ctx context.Context) (hash string, index uint64, err error) {
	ctx, cancel := poll.WithDefaultTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := n.ClusterClient().Status(ctx, &registryv1.StatusRequest{IncludeStateHash: true})
	if err != nil {
		return "", 0, fmt.Errorf("%s: state hash: %w", n.id, err)
	}
	return st.GetStateHash(), st.GetStateHashIndex(), nil
}

// WaitSameState waits until every running node reports the same state hash
// at the same applied index, and returns them. The cluster must be
// quiescent (no client writes) for the nodes to meet at one index; it
// waits at most Options.ApplyTimeout unless ctx ends sooner.
func (c *Cluster) WaitSameState(ctx context.Context) (hash string, index uint64, err error) {
	ctx, cancel := poll.WithDefaultTimeout(ctx, c.opts.ApplyTimeout)
	defer cancel()
	err = poll.Until(ctx, func(ctx context.Context) error {
		hash, index = "", 0
		var seen []string
		for _, n := range c.Running() {
			h, i, err := n.StateHash(ctx)
			if err != nil {
				return err
			}
			seen = append(seen, fmt.Sprintf("%s %.12s@%d", n.id, h, i))
			if hash == "" {
				hash, index = h, i
				continue
			}
			if i != index || h != hash {
				return fmt.Errorf("replicas differ: %s", strings.Join(seen, ", "))
			}
		}
		return nil
	})
	return hash, index, err
}
