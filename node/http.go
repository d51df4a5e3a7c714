package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

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
//	GET /, /ui/...          the web console (console.go)
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
	n.consoleRoutes(mux, gw, gatherers) // the web console: / and /ui/ (console.go)
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

	// A wrong method on a path the stdlib mux serves gets its 405 and Allow
	// header from the mux; this path would otherwise fall to the gateway.
	mux.Handle("/v1/sd/prometheus", methodNotAllowed("GET, HEAD"))

	// probe has the API's routes, each answering only that it matched: the
	// gateway's mux does not say which methods a path has, so a 405 asks
	// probe for each method in turn.
	probe, err := n.gatewayMux(gw, runtime.WithMiddlewares(func(runtime.HandlerFunc) runtime.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request, _ map[string]string) { w.WriteHeader(http.StatusOK) }
	}), runtime.WithRoutingErrorHandler(func(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, _ *http.Request, code int) {
		w.WriteHeader(code)
	}))
	if err != nil {
		return nil, err
	}
	allow := n.httpAllowList()
	api, err := n.gatewayMux(gw, runtime.WithMiddlewares(allow.browserWrites), runtime.WithRoutingErrorHandler(func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, code int) {
		if code != http.StatusMethodNotAllowed {
			runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, code)
			return
		}
		w.Header().Set("Allow", strings.Join(allowedMethods(probe, r), ", "))
		runtime.HTTPError(ctx, mux, m, w, r, &runtime.HTTPStatusError{
			HTTPStatus: code,
			Err:        status.Error(codes.Unimplemented, http.StatusText(code)),
		})
	}))
	if err != nil {
		return nil, err
	}
	mux.Handle("/v1/", http.MaxBytesHandler(api, validate.MaxRequestBytes))
	return allow.guardHosts(mux), nil
}

// gatewayMux is the HTTP/JSON API's mux, calling this node's gRPC server
// through gw.
func (n *Node) gatewayMux(gw *grpc.ClientConn, opts ...runtime.ServeMuxOption) (*runtime.ServeMux, error) {
	api := runtime.NewServeMux(append([]runtime.ServeMuxOption{
		runtime.WithMarshalerOption(runtime.MIMEWildcard, durationJSONPb{&runtime.JSONPb{
			// Proto field names (snake_case) in and out, every field in
			// the output, unknown input fields refused.
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{},
		}}),
		// A POST form is not a GET: a method a path does not have is a
		// 405, whatever the content type.
		runtime.WithDisablePathLengthFallback(),
		runtime.WithIncomingHeaderMatcher(incomingHeaders),
		runtime.WithMetadata(n.clientAddrMetadata),
		runtime.WithErrorHandler(retryAfterErrorHandler),
	}, opts...)...)
	if err := registryv1.RegisterRegistryHandlerClient(n.ctx, api, registryv1.NewRegistryClient(rpc.CheckUTF8(gw))); err != nil {
		return nil, err
	}
	if err := registryv1.RegisterClusterHandlerClient(n.ctx, api, registryv1.NewClusterClient(rpc.CheckUTF8(gw))); err != nil {
		return nil, err
	}
	if err := registryv1.RegisterACLHandlerClient(n.ctx, api, registryv1.NewACLClient(rpc.CheckUTF8(gw))); err != nil {
		return nil, err
	}
	return api, nil
}

// gatewayMethods are the methods an HTTP rule can bind.
var gatewayMethods = []string{http.MethodDelete, http.MethodGet, http.MethodPatch, http.MethodPost, http.MethodPut}

// allowedMethods returns the methods probe has a route for at r's path.
func allowedMethods(probe *runtime.ServeMux, r *http.Request) []string {
	var allowed []string
	for _, m := range gatewayMethods {
		pr := r.Clone(r.Context())
		pr.Method, pr.Body = m, http.NoBody
		rec := &statusRecorder{header: http.Header{}}
		probe.ServeHTTP(rec, pr)
		if rec.code == http.StatusOK {
			allowed = append(allowed, m)
		}
	}
	return allowed
}

// statusRecorder is a ResponseWriter that keeps only the status.
type statusRecorder struct {
	header http.Header
	code   int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.code = code }

// methodNotAllowed answers 405 with the Allow header the stdlib mux sends.
func methodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", allow)
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
	})
}

// durationJSONPb is the gateway's JSONPb that also reads a
// google.protobuf.Duration written as a Go duration ("1h", "1m30s"), not
// only protojson's seconds ("3600s"), and names the field of a value that
// is neither.
type durationJSONPb struct{ *runtime.JSONPb }

func (j durationJSONPb) Unmarshal(data []byte, v any) error {
	err := j.JSONPb.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	md, ok := messageDescriptor(v)
	if !ok {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var doc any
	if d.Decode(&doc) != nil {
		return err
	}
	changed, derr := rewriteDurations(doc, md, "")
	if derr != nil {
		return derr
	}
	if !changed {
		return err
	}
	fixed, merr := json.Marshal(doc)
	if merr != nil {
		return err
	}
	return j.JSONPb.Unmarshal(fixed, v)
}

func (j durationJSONPb) NewDecoder(r io.Reader) runtime.Decoder {
	d := json.NewDecoder(r)
	return runtime.DecoderFunc(func(v any) error {
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			return err
		}
		return j.Unmarshal(raw, v)
	})
}

// messageDescriptor is the descriptor of the message v is, or points to
// (the gateway decodes a body field through a pointer to its pointer).
func messageDescriptor(v any) (protoreflect.MessageDescriptor, bool) {
	for t := reflect.TypeOf(v); t != nil && t.Kind() == reflect.Pointer; t = t.Elem() {
		if m, ok := reflect.Zero(t).Interface().(proto.Message); ok {
			return m.ProtoReflect().Descriptor(), true
		}
	}
	return nil, false
}

// rewriteDurations replaces, in doc (JSON decoded with UseNumber) for a
// message md, every Duration given as a Go duration with protojson's form.
// It reports whether it changed anything, and fails naming the field of a
// Duration that is no duration at all. Other mistakes it leaves to protojson.
func rewriteDurations(doc any, md protoreflect.MessageDescriptor, prefix string) (bool, error) {
	obj, ok := doc.(map[string]any)
	if !ok {
		return false, nil
	}
	changed := false
	for key, val := range obj {
		fd := md.Fields().ByJSONName(key)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(key))
		}
		if fd == nil || fd.Message() == nil || fd.IsMap() {
			continue
		}
		name := prefix + key
		if fd.Message().FullName() == "google.protobuf.Duration" && !fd.IsList() {
			s, ok := val.(string)
			if !ok {
				continue
			}
			dur, err := time.ParseDuration(s)
			if err != nil {
				return false, fmt.Errorf(`field %s: %q is not a duration: use seconds with an s suffix ("3600s") or a Go duration ("1h")`, name, s)
			}
			if out := formatDuration(dur); out != s {
				obj[key], changed = out, true
			}
			continue
		}
		items := []any{val}
		if fd.IsList() {
			items, _ = val.([]any)
		}
		for i, item := range items {
			itemName := name + "."
			if fd.IsList() {
				itemName = fmt.Sprintf("%s[%d].", name, i)
			}
			c, err := rewriteDurations(item, fd.Message(), itemName)
			if err != nil {
				return false, err
			}
			changed = changed || c
		}
	}
	return changed, nil
}

// formatDuration writes d as protojson does: seconds, an s suffix.
func formatDuration(d time.Duration) string {
	b, err := protojson.Marshal(durationpb.New(d))
	if err != nil {
		panic(err) // every time.Duration is a valid Duration
	}
	s, err := strconv.Unquote(string(b))
	if err != nil {
		panic(err)
	}
	return s
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintln(w, msg)
}

// dialSelf opens the gateway's connection to this node's own gRPC address
// (a loopback address when the node listens on all of them), so that HTTP
// calls take the same path as gRPC ones: validation, forwarding, errors.
func dialSelf(grpcAddr string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
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
	return grpc.NewClient(net.JoinHostPort(host, port), append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(validate.MaxRequestBytes)),
	}, extra...)...)
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
	if n.cfg.ACLEnabled {
		id, err := n.rpc.Resolver().ResolveHeader(r.Header.Get("Authorization"))
		if err != nil {
			writeText(w, http.StatusUnauthorized, err.Error())
			return
		}
		instances = slices.DeleteFunc(instances, func(in fsm.Instance) bool {
			return !id.Authz.ServiceRead(in.Service).Allowed()
		})
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
