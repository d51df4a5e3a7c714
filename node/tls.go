package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/tlsutil"
)

// setupTLS loads the node's TLS files, if any, and starts reloading them
// when they change. Without files n.tls stays nil and everything is
// plaintext.
func (n *Node) setupTLS() error {
	if !n.cfg.TLS.Enabled() {
		n.conns.creds = insecure.NewCredentials()
		return nil
	}
	src, err := tlsutil.NewSource(n.cfg.TLS, n.log.With("component", "tls"), nil)
	if err != nil {
		return err
	}
	n.tls = src
	n.undo.add(src.Close)
	n.conns.creds = peerCreds{src}
	return nil
}

// ReloadTLS reads the TLS files again (registry-node does on SIGHUP); new
// connections use them. Without TLS it does nothing.
func (n *Node) ReloadTLS() error {
	if n.tls == nil {
		return nil
	}
	changed, err := n.tls.Reload()
	if err == nil && !changed {
		n.log.Info("tls files unchanged")
	}
	return err
}

// grpcServerCreds is the gRPC server's TLS, with the configured client
// authentication, and the check that only nodes join; none without TLS.
func (n *Node) grpcServerCreds() []grpc.ServerOption {
	if n.tls == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(n.tls.GRPCServerConfig())),
		grpc.ChainUnaryInterceptor(onlyNodesJoin),
	}
}

// onlyNodesJoin refuses Cluster.Join unless the caller presented a
// registry node's certificate: a client's certificate of the same CA must
// not add voters to the Raft configuration.
func onlyNodesJoin(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if info.FullMethod != registryv1.Cluster_Join_FullMethodName {
		return handler(ctx, req)
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && tlsutil.VerifyServer(ti.State) == nil {
			return handler(ctx, req)
		}
	}
	return nil, status.Errorf(codes.PermissionDenied, "join: only a registry node may join: present a certificate that names %s", tlsutil.ServerName)
}

// tlsHTTPListener wraps the HTTP listener in TLS, with the configured
// client authentication.
func (n *Node) tlsHTTPListener(lis net.Listener) net.Listener {
	if n.tls == nil {
		return lis
	}
	return tls.NewListener(lis, n.tls.ServerConfig("http/1.1"))
}

// peerCreds dials other nodes (and this node's own gRPC port for the HTTP
// gateway) with this node's certificate, accepting only a registry
// server's certificate; each handshake uses the current files.
type peerCreds struct{ src *tlsutil.Source }

func (c peerCreds) current() credentials.TransportCredentials {
	return credentials.NewTLS(c.src.PeerClientConfig())
}

func (c peerCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.current().ClientHandshake(ctx, authority, raw)
}

func (c peerCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, fmt.Errorf("node: peer credentials are for dialing only")
}

func (c peerCreds) Info() credentials.ProtocolInfo { return c.current().Info() }

func (c peerCreds) Clone() credentials.TransportCredentials { return c }

// OverrideServerName is deprecated in grpc-go and unused.
func (c peerCreds) OverrideServerName(string) error { return nil }

// newRaftTransport listens on RaftAddr (or takes Config.RaftListener) and
// builds Raft's network transport over it: TCP, or with TLS a stream layer
// that accepts and dials only registry servers of the CA.
func (n *Node) newRaftTransport(hl hclog.Logger) (*raft.NetworkTransport, error) {
	adv, err := net.ResolveTCPAddr("tcp", n.cfg.RaftAdvertise)
	if err != nil {
		return nil, fmt.Errorf("raft advertise %q: %w", n.cfg.RaftAdvertise, err)
	}
	lis := n.cfg.RaftListener
	if lis == nil {
		if lis, err = net.Listen("tcp", n.cfg.RaftAddr); err != nil {
			return nil, fmt.Errorf("raft addr: %w", err)
		}
	}
	layer := &streamLayer{Listener: lis, advertise: adv}
	if n.tls != nil {
		layer.Listener = tls.NewListener(lis, n.tls.PeerServerConfig())
		layer.dialConfig = n.tls.PeerClientConfig
	}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hl,
	}), nil
}

// streamLayer is Raft's stream layer on a listener: plain TCP, or TLS when
// dialConfig is set (the listener then hands out *tls.Conn, which shake
// hands on their first read, in Raft's goroutine for the connection).
// Close also closes the accepted connections: Raft's transport does not,
// and their goroutines would wait for a peer that may never hang up.
type streamLayer struct {
	net.Listener
	advertise  net.Addr
	dialConfig func() *tls.Config // nil: plaintext

	mu       sync.Mutex
	accepted map[net.Conn]struct{}
	closed   bool
}

func (l *streamLayer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if l.accepted == nil {
		l.accepted = make(map[net.Conn]struct{})
	}
	l.accepted[c] = struct{}{}
	return &trackedConn{Conn: c, l: l}, nil
}

func (l *streamLayer) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for c := range l.accepted {
		c.Close()
	}
	l.accepted = nil
	return err
}

// trackedConn forgets itself in its stream layer when closed.
type trackedConn struct {
	net.Conn
	l *streamLayer
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.accepted, c.Conn)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

func (l *streamLayer) Addr() net.Addr { return l.advertise }

func (l *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if l.dialConfig == nil {
		return d.Dial("tcp", string(addr))
	}
	td := tls.Dialer{NetDialer: d, Config: l.dialConfig()}
	return td.Dial("tcp", string(addr))
}

// tlsCollector exports the expiry of the node's certificate, read at
// scrape time so that it follows reloads; nothing without TLS.
type tlsCollector struct{ n *Node }

var descCertExpiry = prometheus.NewDesc("registry_tls_cert_expiry_timestamp_seconds",
	"When this node's TLS certificate expires (its NotAfter), as a Unix time; follows reloads. Absent without TLS.", nil, nil)

func (c tlsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descCertExpiry }

func (c tlsCollector) Collect(ch chan<- prometheus.Metric) {
	if src := c.n.tls; src != nil {
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(src.Certificate().NotAfter.Unix()))
	}
}
