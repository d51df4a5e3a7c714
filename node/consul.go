package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/regcenter/registry/consulapi"
	"github.com/regcenter/registry/validate"
)

// consulServer is the Consul-compatible API's listener and server, when
// Config.ConsulAddr is set.
type consulServer struct {
	lis  net.Listener
	srv  *http.Server
	conn *grpc.ClientConn // its own connection to this node's gRPC server
}

// serveConsul serves the Consul-compatible API (package consulapi) on
// ConsulAddr, unless it is empty: with the HTTP server's limits (connection
// count, timeouts, header and body sizes) and, with TLS on, its TLS. Every
// call goes through this node's gRPC server on a connection of its own,
// with the HTTP gateway's client-address metadata.
func (n *Node) serveConsul() error {
	if n.cfg.ConsulAddr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", n.cfg.ConsulAddr)
	if err != nil {
		return fmt.Errorf("consul addr: %w", err)
	}
	n.undo.add(func() { lis.Close() })
	conn, err := dialSelf(n.GRPCAddr(), grpc.WithTransportCredentials(n.conns.creds))
	if err != nil {
		return fmt.Errorf("consul api: %w", err)
	}
	n.undo.add(func() { conn.Close() })
	api, err := consulapi.New(consulapi.Config{
		Conn:         conn,
		CallMetadata: func(r *http.Request) metadata.MD { return n.clientAddrMetadata(r.Context(), r) },
		Cluster:      consulCluster{n},
		WriteTimeout: n.cfg.Limits.HTTPWriteTimeout,
		Logger:       n.log.With("component", "consulapi"),
	})
	if err != nil {
		return fmt.Errorf("consul api: %w", err)
	}
	n.consul = &consulServer{
		lis:  n.tlsHTTPListener(n.limitListener(lis)),
		srv:  n.httpServer(http.MaxBytesHandler(api, validate.MaxRequestBytes)),
		conn: conn,
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.consul.srv.Serve(n.consul.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("consul api server stopped", "error", err)
		}
	}()
	return nil
}

// stopConsul stops the Consul-compatible API: blocking queries end with
// their requests, bounded by ctx.
func (n *Node) stopConsul(ctx context.Context) {
	if n.consul == nil {
		return
	}
	if err := n.consul.srv.Shutdown(ctx); err != nil {
		n.consul.srv.Close()
	}
	n.consul.conn.Close()
}

// ConsulAddr is the bound address of the Consul-compatible API, or "" when
// it is off.
func (n *Node) ConsulAddr() string {
	if n.consul == nil {
		return ""
	}
	return n.consul.lis.Addr().String()
}

// consulCluster is consulapi.Cluster over this node's Raft.
type consulCluster struct{ n *Node }

func (c consulCluster) NodeID() string { return c.n.cfg.NodeID }

func (c consulCluster) LeaderRaftAddr() string {
	addr, _ := c.n.raft.LeaderWithID()
	return string(addr)
}

func (c consulCluster) Peers() []string {
	f := c.n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out = append(out, string(s.Address))
		}
	}
	return out
}

func (c consulCluster) AppliedIndex() uint64 { return c.n.raft.AppliedIndex() }

func (c consulCluster) LastContact() time.Duration {
	if c.n.IsLeader() {
		return 0
	}
	last := c.n.raft.LastContact()
	if last.IsZero() {
		return 0
	}
	return time.Since(last)
}
