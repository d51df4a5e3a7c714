package node

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/regcenter/registry/internal/defaults"
	"github.com/regcenter/registry/rpc"
)

// Limits bound what clients can take of one node: connections, streams,
// slow or idle peers, writes and watches per client address, and which
// browsers may write. Zero fields take DefaultLimits' values.
type Limits struct {
	// MaxConnections bounds the open connections of each client listener
	// (gRPC and HTTP, each on its own); beyond it a new connection waits in
	// the kernel's accept queue until one closes. Raft's listener is not
	// limited.
	MaxConnections int
	// GRPCMaxConcurrentStreams bounds the concurrent calls (streams) of one
	// gRPC connection.
	GRPCMaxConcurrentStreams int
	// GRPCMaxConnectionIdle closes a gRPC connection that has had no call
	// for this long (a GOAWAY; a client reconnects when it next calls).
	GRPCMaxConnectionIdle time.Duration
	// GRPCConnectionTimeout bounds a new gRPC connection's handshake: a
	// connection that sends nothing is closed after it.
	GRPCConnectionTimeout time.Duration
	// GRPCKeepaliveMinTime is the shortest keepalive ping interval a client
	// may use; a client that pings more often is disconnected.
	GRPCKeepaliveMinTime time.Duration

	// HTTPReadHeaderTimeout bounds reading a request's header (and a new
	// connection's wait for its first request).
	HTTPReadHeaderTimeout time.Duration
	// HTTPReadTimeout bounds reading a whole request, body included: a
	// slow body is cut. Watches are exempt once their request is read.
	HTTPReadTimeout time.Duration
	// HTTPWriteTimeout bounds writing a response, from the end of its
	// request's header. Watches (GET /v1/watch, /v1/services/{s}/watch)
	// are exempt: they stream for as long as the client reads. pprof's
	// profile and trace extend it by the seconds asked for.
	HTTPWriteTimeout time.Duration
	// HTTPIdleTimeout closes a keep-alive connection idle this long.
	HTTPIdleTimeout time.Duration
	// HTTPMaxHeaderBytes bounds a request's header.
	HTTPMaxHeaderBytes int

	// WriteRate and WriteBurst bound the writes of one client: its ACL
	// token with ACLs on, its address otherwise (rpc.Config.WriteRate,
	// WriteBurst).
	WriteRate  float64
	WriteBurst int
	// MaxWatchesPerClient bounds the watches of one client, counted as
	// for WriteRate (rpc.Config.MaxWatchesPerClient).
	MaxWatchesPerClient int

	// HTTPAllowedOrigins are the browser origins (scheme://host[:port])
	// that may send writes to the HTTP API; HTTPAllowedHosts the Host
	// headers the HTTP API answers. Empty: the node's own HTTP addresses
	// (bound and advertised) and localhost, 127.0.0.1 and [::1] on its
	// HTTP port. "*" allows any.
	HTTPAllowedOrigins []string
	HTTPAllowedHosts   []string
}

// DefaultLimits returns the defaults: generous enough that a client
// library, the benchmarks (docs/benchmarks.md) and the README examples are
// never limited, tight enough that idle, slow or flooding clients are.
func DefaultLimits() Limits {
	services := rpc.DefaultConfig()
	return Limits{
		MaxConnections:           8192,
		GRPCMaxConcurrentStreams: 1024,
		GRPCMaxConnectionIdle:    5 * time.Minute,
		GRPCConnectionTimeout:    10 * time.Second,
		GRPCKeepaliveMinTime:     5 * time.Second,
		HTTPReadHeaderTimeout:    10 * time.Second,
		HTTPReadTimeout:          30 * time.Second,
		HTTPWriteTimeout:         30 * time.Second,
		HTTPIdleTimeout:          2 * time.Minute,
		HTTPMaxHeaderBytes:       64 << 10,
		WriteRate:                services.WriteRate,
		WriteBurst:               services.WriteBurst,
		MaxWatchesPerClient:      services.MaxWatchesPerClient,
	}
}

// WithDefaults returns l with each zero field set from DefaultLimits.
func (l Limits) WithDefaults() Limits {
	defaults.Fill(&l, DefaultLimits())
	return l
}

// Validate reports every limit that cannot work, joined.
func (l *Limits) Validate() error {
	var errs []error
	if l.MaxConnections < 2 {
		// The HTTP API's own connection to the gRPC server takes one.
		errs = append(errs, fmt.Errorf("max connections (%d) must be at least 2", l.MaxConnections))
	}
	if l.GRPCMaxConcurrentStreams < 1 || l.GRPCMaxConcurrentStreams > 1<<31 || l.HTTPMaxHeaderBytes < 1024 {
		errs = append(errs, fmt.Errorf("grpc max concurrent streams (%d) must be 1 to 2^31 and http max header bytes (%d) at least 1024",
			l.GRPCMaxConcurrentStreams, l.HTTPMaxHeaderBytes))
	}
	for name, d := range map[string]time.Duration{
		"grpc max connection idle": l.GRPCMaxConnectionIdle, "grpc keepalive min time": l.GRPCKeepaliveMinTime,
		"grpc connection timeout":  l.GRPCConnectionTimeout,
		"http read header timeout": l.HTTPReadHeaderTimeout, "http read timeout": l.HTTPReadTimeout,
		"http write timeout": l.HTTPWriteTimeout, "http idle timeout": l.HTTPIdleTimeout,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s (%v) must be positive", name, d))
		}
	}
	if l.WriteRate <= 0 || l.WriteBurst < 1 || l.MaxWatchesPerClient < 1 {
		errs = append(errs, fmt.Errorf("write rate (%v) must be positive, write burst (%d) and max watches per client (%d) at least 1",
			l.WriteRate, l.WriteBurst, l.MaxWatchesPerClient))
	}
	return errors.Join(errs...)
}

// limitListener bounds lis to MaxConnections open connections.
func (n *Node) limitListener(lis net.Listener) net.Listener {
	return netutil.LimitListener(lis, n.cfg.Limits.MaxConnections)
}

// grpcLimits are the gRPC server options that bound a connection.
func (n *Node) grpcLimits() []grpc.ServerOption {
	l := n.cfg.Limits
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(uint32(l.GRPCMaxConcurrentStreams)),
		grpc.ConnectionTimeout(l.GRPCConnectionTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.GRPCKeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: l.GRPCMaxConnectionIdle,
			Time:              30 * time.Second,
			Timeout:           10 * time.Second,
		}),
	}
}

// httpServer is the HTTP server of handler with the limits' timeouts.
// Watches clear their own deadlines (see guardHTTP).
func (n *Node) httpServer(handler http.Handler) *http.Server {
	l := n.cfg.Limits
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: l.HTTPReadHeaderTimeout,
		ReadTimeout:       l.HTTPReadTimeout,
		WriteTimeout:      l.HTTPWriteTimeout,
		IdleTimeout:       l.HTTPIdleTimeout,
		MaxHeaderBytes:    l.HTTPMaxHeaderBytes,
	}
}

// isWatch reports whether r is an HTTP watch: a stream that lasts as long
// as the client reads it.
func isWatch(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	if r.URL.Path == "/v1/watch" {
		return true
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/services/")
	service, watch := strings.CutSuffix(rest, "/watch")
	return ok && watch && service != "" && !strings.Contains(service, "/")
}

// streamWithoutDeadlines lets a watch outlive the server's read and write
// timeouts: its request is read by now, and it writes for as long as the
// client reads. The write deadline would end it (the test shows it); the
// read deadline is cleared too, so that the server's background read of
// the connection cannot fail at it.
func streamWithoutDeadlines(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
}
