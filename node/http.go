package node

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/rpc"
	"github.com/regcenter/registry/validate"
)

// httpHandler serves, on --http-addr:
//
//	GET /metrics            the node's own Prometheus registry and raft's metrics
//	GET /healthz            200 while the process serves
//	GET /readyz             200 once a leader is known and this node has applied
//	                        what was committed when it started; 503 otherwise
//	GET /v1/sd/prometheus   Prometheus HTTP service discovery, from this replica
//	/debug/pprof/...        net/http/pprof, with Config.EnablePprof only
//	/v1/...                 the HTTP/JSON API: the gRPC gateway, calling this
//	                        node's own gRPC server through gw
func (n *Node) httpHandler(gw *grpc.ClientConn, gatherers prometheus.Gatherers) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherers, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := n.readyNow(); !ok {
			writeText(w, http.StatusServiceUnavailable, "not ready: "+why)
			return
		}
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /v1/sd/prometheus", n.serveSD)
	if n.cfg.EnablePprof {
		// Explicit routes on our own mux: net/http/pprof's init also
		// registers on http.DefaultServeMux, which nothing here serves.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	for pattern, h := range n.cfg.DebugHandlers {
		mux.Handle(pattern, h)
	}

	api := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		// Proto field names (snake_case) in and out, every field in the
		// output, unknown input fields refused.
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{},
	}))
	if err := registryv1.RegisterRegistryHandlerClient(n.ctx, api, registryv1.NewRegistryClient(rpc.CheckUTF8(gw))); err != nil {
		return nil, err
	}
	if err := registryv1.RegisterClusterHandlerClient(n.ctx, api, registryv1.NewClusterClient(rpc.CheckUTF8(gw))); err != nil {
		return nil, err
	}
	mux.Handle("/v1/", http.MaxBytesHandler(api, validate.MaxRequestBytes))
	return mux, nil
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// dialSelf opens the gateway's connection to this node's own gRPC address
// (a loopback address when the node listens on all of them), so that HTTP
// calls take the same path as gRPC ones: validation, forwarding, errors.
func dialSelf(grpcAddr string) (*grpc.ClientConn, error) {
	host, port, err := net.SplitHostPort(grpcAddr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		// "0.0.0.0:7001" and ":7001" both listen as "[::]:7001" (dual
		// stack): dial localhost, which gRPC resolves to 127.0.0.1 and ::1
		// and tries in turn, so that v4-only hosts (most containers) and
		// v6-only ones both work.
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "localhost"
		}
	}
	return grpc.NewClient(net.JoinHostPort(host, port),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(validate.MaxRequestBytes)))
}

// readiness latches the commit index a starting node must apply before it
// is ready: the one it learns with its first leader.
type readiness struct {
	mu       sync.Mutex
	target   uint64
	caughtUp bool
}

// check reports whether a node that knows a leader (or not), with the given
// commit and applied indexes, is ready, and if not why. Once caught up, a
// node stays ready while it knows a leader.
func (r *readiness) check(leaderKnown bool, commit, applied uint64) (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !leaderKnown {
		return false, "no leader is known"
	}
	if r.caughtUp {
		return true, ""
	}
	if r.target == 0 {
		if commit == 0 {
			return false, "no commit index from the leader yet"
		}
		r.target = commit
	}
	if applied < r.target {
		return false, fmt.Sprintf("applied index %d, catching up to %d", applied, r.target)
	}
	r.caughtUp = true
	return true, ""
}

// readyNow checks the node's readiness now.
func (n *Node) readyNow() (bool, string) {
	if n.ctx.Err() != nil {
		return false, "shutting down"
	}
	_, leader := n.Leader()
	return n.ready.check(leader, n.raft.CommitIndex(), n.raft.AppliedIndex())
}

// targetGroup is one entry of Prometheus' HTTP service discovery format.
type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// serveSD implements GET /v1/sd/prometheus[?service=a,b][&include_suspect=true]
// from this node's replica.
func (n *Node) serveSD(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	includeSuspect := false
	if v := q.Get("include_suspect"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			http.Error(w, fmt.Sprintf("include_suspect: %q is not true or false", v), http.StatusBadRequest)
			return
		}
		includeSuspect = b
	}
	var services []string
	if v := q.Get("service"); v != "" {
		for _, s := range strings.Split(v, ",") {
			if err := validate.Service("service", s, false); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			services = append(services, s)
		}
	}
	var instances []fsm.Instance
	if services == nil {
		instances, _ = n.fsm.Instances()
	}
	for _, s := range services {
		ins, _ := n.fsm.GetService(s, true)
		instances = append(instances, ins...)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(sdTargetGroups(instances, includeSuspect))
}

// sdTargetGroups turns instances into target groups, one per instance, in
// the order given: HEALTHY instances, and SUSPECT ones if includeSuspect.
// Metadata keys become label names with every character outside
// [A-Za-z0-9_] replaced by "_"; of keys that collide so, the first in
// sorted order wins.
func sdTargetGroups(instances []fsm.Instance, includeSuspect bool) []targetGroup {
	groups := []targetGroup{}
	for _, in := range instances {
		if in.State == fsm.StateSuspect && !includeSuspect {
			continue
		}
		labels := map[string]string{
			"__meta_registry_service":     in.Service,
			"__meta_registry_instance_id": in.ID,
			"__meta_registry_state":       strings.ToLower(in.State.String()),
		}
		keys := make([]string, 0, len(in.Metadata))
		for k := range in.Metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			name := "__meta_registry_metadata_" + sanitizeLabel(k)
			if _, taken := labels[name]; !taken {
				labels[name] = in.Metadata[k]
			}
		}
		groups = append(groups, targetGroup{Targets: []string{in.Address}, Labels: labels})
	}
	return groups
}

// sanitizeLabel replaces every character outside [A-Za-z0-9_] with "_".
func sanitizeLabel(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
}
