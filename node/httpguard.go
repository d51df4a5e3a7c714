package node

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
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

// httpAllow is who may use the HTTP API from a browser: the Host names it
// answers (DNS-rebinding protection) and the Origins that may write.
type httpAllow struct {
	anyHost, anyOrigin bool
	hosts              map[string]bool // lower-case host names, ports ignored
	origins            map[string]bool // lower-case scheme://host:port
}

// httpAllowList builds the allow-list from Limits.HTTPAllowedHosts and
// HTTPAllowedOrigins, or, for an empty one, the defaults: the host names
// of the node's HTTP addresses (bound and advertised) and localhost; and
// the http and https origins of those, 127.0.0.1 and [::1] on the bound
// HTTP port and the advertised one.
func (n *Node) httpAllowList() httpAllow {
	a := httpAllow{hosts: map[string]bool{}, origins: map[string]bool{}}
	l := n.cfg.Limits
	var own []string // host:port
	for _, addr := range []string{n.HTTPAddr(), n.cfg.HTTPAddr, n.cfg.HTTPAdvertise} {
		if _, port, err := net.SplitHostPort(addr); err == nil && port != "0" {
			own = append(own, addr, net.JoinHostPort("localhost", port),
				net.JoinHostPort("127.0.0.1", port), net.JoinHostPort("::1", port))
		}
	}
	hosts := l.HTTPAllowedHosts
	if len(hosts) == 0 {
		hosts = append([]string{"localhost"}, own...)
	}
	for _, h := range hosts {
		a.anyHost = a.anyHost || h == "*"
		if name, _, err := net.SplitHostPort(h); err == nil {
			h = name
		}
		a.hosts[strings.ToLower(h)] = true
	}
	origins := l.HTTPAllowedOrigins
	if len(origins) == 0 {
		for _, hp := range own {
			origins = append(origins, "http://"+hp, "https://"+hp)
		}
	}
	for _, o := range origins {
		a.anyOrigin = a.anyOrigin || o == "*"
		a.origins[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	return a
}

// hostAllowed reports whether the API answers a request with this Host
// header: an IP address always (a rebinding attack needs a name), a name
// if it is in the allow-list.
func (a httpAllow) hostAllowed(host string) bool {
	if name, _, err := net.SplitHostPort(host); err == nil {
		host = name
	}
	host = strings.Trim(host, "[]")
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return a.anyHost || a.hosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// guardHosts refuses, on the /v1/ paths, a request whose Host is a name
// not in the allow-list: a page on a domain rebound to this node's address
// must not read or write the registry.
func (a httpAllow) guardHosts(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") && !a.hostAllowed(r.Host) {
			refuse(w, fmt.Sprintf("host %q is not allowed (--http-allowed-hosts)", r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// browserWrites is gateway middleware (it runs on matched API routes
// only, so that a wrong method is still a 405) that refuses writes a web
// page could send: a POST, PUT or PATCH must be Content-Type
// application/json, which no HTML form and no "no-cors" fetch can send,
// and any request with an Origin header must come from an allowed origin.
// A DELETE needs no Content-Type: a browser sends a cross-origin DELETE
// only after a CORS preflight, which this node never approves, and with an
// Origin, which is checked.
func (a httpAllow) browserWrites(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if o := r.Header.Get("Origin"); o != "" && r.Method != http.MethodGet && r.Method != http.MethodHead &&
			!a.anyOrigin && !a.origins[strings.ToLower(o)] {
			refuse(w, fmt.Sprintf("origin %q may not write (--http-allowed-origins)", o))
			return
		}
		switch r.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
				refuse(w, fmt.Sprintf("a %s needs Content-Type: application/json, not %q", r.Method, r.Header.Get("Content-Type")))
				return
			}
		}
		next(w, r, params)
	}
}

// refuse answers 403 with a JSON body shaped like the API's errors
// (PERMISSION_DENIED) that says why.
func refuse(w http.ResponseWriter, why string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusForbidden)
	json.NewEncoder(w).Encode(map[string]any{"code": codes.PermissionDenied, "message": why, "details": []any{}})
}
