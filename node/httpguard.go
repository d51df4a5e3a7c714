package node

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/regcenter/registry/rpc"
)

// guardHTTP wraps the node's HTTP handler: a watch is freed of the
// server's read and write deadlines.
func (n *Node) guardHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isWatch(r) {
			streamWithoutDeadlines(w)
		}
		next.ServeHTTP(w, r)
	})
}

// incomingHeaders is the gateway's default header matcher, except that no
// HTTP client may set the registry's own metadata (x-registry-*: the
// forwarding mark, the client address, the gateway token) through a
// Grpc-Metadata- header.
func incomingHeaders(key string) (string, bool) {
	md, ok := runtime.DefaultHeaderMatcher(key)
	if ok && strings.HasPrefix(strings.ToLower(md), "x-registry-") {
		return "", false
	}
	return md, ok
}

// clientAddrMetadata tells the gRPC server the HTTP client's address, so
// that per-client limits count it rather than the gateway's loopback
// connection.
func (n *Node) clientAddrMetadata(_ context.Context, r *http.Request) metadata.MD {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return nil
	}
	return metadata.Pairs(rpc.ClientAddrKey, host, rpc.GatewayTokenKey, n.rpc.GatewayToken())
}

// retryAfterErrorHandler is the gateway's error handler that also sets
// Retry-After (whole seconds, rounded up) from a status's RetryInfo: a
// rate-limited write is a 429 that says when to retry.
func retryAfterErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if st, ok := status.FromError(err); ok {
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				secs := (ri.GetRetryDelay().AsDuration() + time.Second - 1) / time.Second
				w.Header().Set("Retry-After", strconv.Itoa(max(int(secs), 1)))
			}
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}
