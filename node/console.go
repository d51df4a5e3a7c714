package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/console"
	"github.com/regcenter/registry/rpc"
	"github.com/regcenter/registry/validate"
)

// The web console (package console) and its endpoints, on the HTTP port:
//
//	GET /                    redirects to /ui/
//	GET /ui/                 the console's page and files (embedded)
//	GET /ui/api/overview     this node's Cluster.Status, every member's own
//	                         Status (lag, clock skew), the leader's checker,
//	                         fence and guard, the totals of instances by
//	                         state, and the last minutes of beats/s and
//	                         expirations from this node's counters
//	GET /ui/api/whoami       whether ACLs are on and what the caller's token
//	                         may do (?service= for that service's write)
//	GET /ui/api/events       Server-Sent Events backed by Watch
//	                         (?service=, ?after_index=, ?events_only=true)
//	POST /ui/api/expiry-guard/release
//	                         Cluster.ReleaseExpiryGuard (forwarded to the
//	                         leader), which has no HTTP API route
//
// Every call goes through the node's own gRPC server (the gateway's
// connection), or a member's for its Status, carrying the caller's
// Authorization, so that the console sees and may do exactly what the
// token may through the API. Actions (Deregister, ReleaseExpiryGuard) are
// the API's own routes, called same-origin.
const (
	// consoleCSP allows only the console's own files: no inline script or
	// style, no frames, no other origin.
	consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
		"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	// consoleEventBuffer bounds the Watch messages one events stream holds
	// for a client that reads slower than they come; when it is full the
	// stream ends with an "overflow" event and the page reconnects, starting
	// over with a reset (as Watch itself does for a consumer that lags).
	consoleEventBuffer = 256
	// consoleWriteTimeout drops an events stream whose client has not taken
	// one message in this long.
	consoleWriteTimeout = 10 * time.Second
	// consoleKeepAlive is how often an idle events stream sends a comment.
	consoleKeepAlive = 15 * time.Second
	// consoleMemberTimeout bounds the Status call to each member.
	consoleMemberTimeout = 2 * time.Second
	// consoleSamples is how many one-second samples the sparklines keep.
	consoleSamples = 120
)

// consoleRoutes adds the console to mux. The sampler it starts ends with
// the node.
func (n *Node) consoleRoutes(mux *http.ServeMux, gw *grpc.ClientConn, gatherer prometheus.Gatherer) {
	s := &consoleSampler{gatherer: gatherer}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		s.run(n.ctx)
	}()
	c := &consoleAPI{n: n, gw: gw, sampler: s}
	files := http.StripPrefix("/ui/", http.FileServerFS(console.Files()))
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	mux.Handle("GET /ui/", consoleHeaders(files))
	mux.Handle("GET /ui/api/overview", consoleHeaders(http.HandlerFunc(c.overview)))
	mux.Handle("GET /ui/api/whoami", consoleHeaders(http.HandlerFunc(c.whoami)))
	mux.Handle("GET /ui/api/events", consoleHeaders(http.HandlerFunc(c.events)))
	// The API has no HTTP route for ReleaseExpiryGuard: this is the
	// console's, with the API's rules for browser writes (Origin,
	// Content-Type: application/json).
	release := n.httpAllowList().browserWrites(func(w http.ResponseWriter, r *http.Request, _ map[string]string) { c.releaseGuard(w, r) })
	mux.Handle("POST /ui/api/expiry-guard/release", consoleHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		release(w, r, nil)
	})))
}

// consoleHeaders sets the console's security headers.
func consoleHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", consoleCSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

type consoleAPI struct {
	n       *Node
	gw      *grpc.ClientConn
	sampler *consoleSampler
}

// callContext is r's context with the metadata the gateway adds to an API
// call: the caller's Authorization, its address and the gateway's token.
func (c *consoleAPI) callContext(ctx context.Context, r *http.Request) context.Context {
	kv := []string{rpc.GatewayTokenKey, c.n.rpc.GatewayToken()}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		kv = append(kv, rpc.ClientAddrKey, host)
	}
	if a := r.Header.Get("Authorization"); a != "" {
		kv = append(kv, "authorization", a)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// consoleError answers err as the API does: the HTTP status of its gRPC
// code and a JSON body with the code and message.
func consoleError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	json.NewEncoder(w).Encode(map[string]any{"code": st.Code(), "message": st.Message()})
}

func consoleJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// consoleMember is one member of the Raft configuration as the overview
// shows it: its configuration entry and what its own Status says.
type consoleMember struct {
	ID          string `json:"id"`
	RaftAddress string `json:"raft_address"`
	GRPCAddress string `json:"grpc_address"`
	HTTPAddress string `json:"http_address"`
	Voter       bool   `json:"voter"`
	Leader      bool   `json:"leader"`
	Self        bool   `json:"self"`
	// Error is why the member's Status could not be read; the fields
	// below are then empty.
	Error        string `json:"error,omitempty"`
	Role         string `json:"role"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	// Lag is the leader's commit index minus the member's applied index.
	Lag uint64 `json:"lag"`
	// LastContactMS is how long ago the member last heard from the
	// leader (its own Status); -1 when unknown or when the member leads.
	LastContactMS int64 `json:"last_contact_ms"`
	// ClockSkewMS is the member's clock minus the leader's; null when not
	// known.
	ClockSkewMS *float64 `json:"clock_skew_ms"`
}

// consoleLiveness is the leader's checker state.
type consoleLiveness struct {
	Known                    bool    `json:"known"`
	CheckerRunning           bool    `json:"checker_running"`
	ExpiryGuardEngaged       bool    `json:"expiry_guard_engaged"`
	ExpiryGuardReleased      bool    `json:"expiry_guard_released"`
	ExpiriesHeld             uint32  `json:"expiries_held"`
	FailoverFenceRemainingMS float64 `json:"failover_fence_remaining_ms"`
}

type consoleOverview struct {
	NodeID   string          `json:"node_id"`
	Role     string          `json:"role"`
	Term     uint64          `json:"term"`
	LeaderID string          `json:"leader_id"`
	Members  []consoleMember `json:"members"`
	Liveness consoleLiveness `json:"liveness"`
	// Totals are of the services and instances the token may read, from
	// ListServices; TotalsError says why they are missing.
	Totals      *consoleTotals `json:"totals"`
	TotalsError string         `json:"totals_error,omitempty"`
	Series      consoleSeries  `json:"series"`
}

type consoleTotals struct {
	Services int `json:"services"`
	Healthy  int `json:"healthy"`
	Suspect  int `json:"suspect"`
}

func (c *consoleAPI) overview(w http.ResponseWriter, r *http.Request) {
	ctx := c.callContext(r.Context(), r)
	self, err := registryv1.NewClusterClient(c.gw).Status(ctx, &registryv1.StatusRequest{})
	if err != nil {
		consoleError(w, err)
		return
	}
	out := consoleOverview{NodeID: self.NodeId, Role: self.Role, Term: self.Term, LeaderID: self.LeaderId, Series: c.sampler.series()}
	statuses := make([]*registryv1.StatusResponse, len(self.Members))
	errs := make([]error, len(self.Members))
	var wg sync.WaitGroup
	for i, m := range self.Members {
		if m.Id == self.NodeId {
			statuses[i] = self
			continue
		}
		if m.GrpcAddress == "" {
			errs[i] = errors.New("has not published its address yet")
			continue
		}
		wg.Go(func() {
			statuses[i], errs[i] = c.memberStatus(ctx, m.GrpcAddress)
		})
	}
	wg.Wait()
	var leaderCommit uint64
	for i, m := range self.Members {
		if st := statuses[i]; st != nil && m.Leader {
			leaderCommit = st.CommitIndex
			out.Liveness = consoleLiveness{
				Known:                    true,
				CheckerRunning:           st.CheckerRunning,
				ExpiryGuardEngaged:       st.ExpiryGuardEngaged,
				ExpiryGuardReleased:      st.ExpiryGuardReleased,
				ExpiriesHeld:             st.ExpiriesHeld,
				FailoverFenceRemainingMS: ms(st.FailoverFenceRemaining.AsDuration()),
			}
		}
	}
	for i, m := range self.Members {
		cm := consoleMember{ID: m.Id, RaftAddress: m.RaftAddress, GRPCAddress: m.GrpcAddress, HTTPAddress: m.HttpAddress,
			Voter: m.Voter, Leader: m.Leader, Self: m.Id == self.NodeId, LastContactMS: -1}
		st := statuses[i]
		if st == nil {
			cm.Error = status.Convert(errs[i]).Message()
			out.Members = append(out.Members, cm)
			continue
		}
		cm.Role, cm.Term, cm.AppliedIndex, cm.CommitIndex = st.Role, st.Term, st.AppliedIndex, st.CommitIndex
		if commit := max(leaderCommit, st.CommitIndex); commit > st.AppliedIndex {
			cm.Lag = commit - st.AppliedIndex
		}
		if st.ClockSkew != nil {
			skew := ms(st.ClockSkew.AsDuration())
			cm.ClockSkewMS = &skew
		}
		if st.LastContact != nil && !m.Leader {
			cm.LastContactMS = st.LastContact.AsDuration().Milliseconds()
		}
		out.Members = append(out.Members, cm)
	}
	list, err := registryv1.NewRegistryClient(c.gw).ListServices(ctx, &registryv1.ListServicesRequest{Consistency: registryv1.Consistency_CONSISTENCY_STALE})
	if err != nil {
		out.TotalsError = status.Convert(err).Message()
	} else {
		t := &consoleTotals{Services: len(list.Services)}
		for _, s := range list.Services {
			t.Healthy += int(s.Healthy)
			t.Suspect += int(s.Suspect)
		}
		out.Totals = t
	}
	consoleJSON(w, out)
}

func (c *consoleAPI) releaseGuard(w http.ResponseWriter, r *http.Request) {
	resp, err := registryv1.NewClusterClient(c.gw).ReleaseExpiryGuard(c.callContext(r.Context(), r), &registryv1.ReleaseExpiryGuardRequest{})
	if err != nil {
		consoleError(w, err)
		return
	}
	consoleJSON(w, map[string]any{"was_engaged": resp.WasEngaged, "held": resp.Held})
}

// memberStatus asks the member at grpcAddr for its own Status, with the
// caller's metadata.
func (c *consoleAPI) memberStatus(ctx context.Context, grpcAddr string) (*registryv1.StatusResponse, error) {
	cc, err := c.n.conns.get(grpcAddr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, consoleMemberTimeout)
	defer cancel()
	return registryv1.NewClusterClient(cc).Status(ctx, &registryv1.StatusRequest{})
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// consoleWhoami says what the page may offer: with ACLs off, everything.
type consoleWhoami struct {
	ACLEnabled    bool   `json:"acl_enabled"`
	AccessorID    string `json:"accessor_id,omitempty"`
	OperatorRead  bool   `json:"operator_read"`
	OperatorWrite bool   `json:"operator_write"`
	ServiceWrite  bool   `json:"service_write"`
	Service       string `json:"service,omitempty"`
}

func (c *consoleAPI) whoami(w http.ResponseWriter, r *http.Request) {
	service := r.URL.Query().Get("service")
	if service != "" {
		if err := validate.Service("service", service, false); err != nil {
			consoleError(w, status.Error(codes.InvalidArgument, err.Error()))
			return
		}
	}
	if !c.n.cfg.ACLEnabled {
		consoleJSON(w, consoleWhoami{OperatorRead: true, OperatorWrite: true, ServiceWrite: true, Service: service})
		return
	}
	id, err := c.n.rpc.Resolver().ResolveHeader(r.Header.Get("Authorization"))
	if err != nil {
		consoleError(w, status.Error(codes.Unauthenticated, err.Error()))
		return
	}
	out := consoleWhoami{ACLEnabled: true, AccessorID: id.AccessorID, Service: service,
		OperatorRead: id.Authz.OperatorRead().Allowed(), OperatorWrite: id.Authz.OperatorWrite().Allowed()}
	if service != "" {
		out.ServiceWrite = id.Authz.ServiceWrite(service).Allowed()
	}
	consoleJSON(w, out)
}

// events streams Watch as Server-Sent Events: each Watch message is one
// "watch" event whose data is the message in the API's JSON. With
// events_only, a reset's instances are left out (the events page shows
// changes only). A client that falls consoleEventBuffer messages behind
// gets an "overflow" event and the end of the stream.
func (c *consoleAPI) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := &registryv1.WatchRequest{Service: q.Get("service")}
	if req.Service != "" {
		if err := validate.Service("service", req.Service, false); err != nil {
			consoleError(w, status.Error(codes.InvalidArgument, err.Error()))
			return
		}
	}
	if v := q.Get("after_index"); v != "" {
		after, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			consoleError(w, status.Error(codes.InvalidArgument, fmt.Sprintf("after_index: %q is not a Raft index", v)))
			return
		}
		req.AfterIndex = after
	}
	eventsOnly := false
	if v := q.Get("events_only"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			consoleError(w, status.Error(codes.InvalidArgument, fmt.Sprintf("events_only: %q is not true or false", v)))
			return
		}
		eventsOnly = b
	}
	ctx, cancel := context.WithCancel(c.callContext(r.Context(), r))
	defer cancel()
	stream, err := registryv1.NewRegistryClient(c.gw).Watch(ctx, req)
	if err != nil {
		consoleError(w, err)
		return
	}
	// The first message (or error) decides the status: a refused watch is
	// an HTTP error, not an empty stream.
	first, err := stream.Recv()
	if err != nil {
		consoleError(w, err)
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // ends stream.Recv, and so the pump, before the Wait
	pump := startWatchPump(&wg, first, stream.Recv, consoleEventBuffer)
	msgs, overflow, recvDone := pump.msgs, pump.overflow, pump.done

	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	marshal := protojson.MarshalOptions{UseProtoNames: true}
	write := func(event string, data []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(consoleWriteTimeout))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	keepAlive := time.NewTicker(consoleKeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case m := <-msgs:
			if eventsOnly {
				m.Instances = nil // only a reset carries instances
			}
			b, err := marshal.Marshal(m)
			if err != nil || !write("watch", b) {
				return
			}
		case <-overflow:
			write("overflow", []byte(`{"message":"the page fell behind the events; starting over"}`))
			return
		case err := <-recvDone:
			if ctx.Err() == nil {
				st := status.Convert(err)
				b, _ := json.Marshal(map[string]any{"code": st.Code(), "message": st.Message()})
				write("error", b)
			}
			return
		case <-keepAlive.C:
			_ = rc.SetWriteDeadline(time.Now().Add(consoleWriteTimeout))
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// watchPump reads a Watch stream into a bounded buffer, so that a slow
// reader is noticed rather than slowing the stream: when the buffer is
// full the pump closes overflow and stops reading.
type watchPump struct {
	msgs     chan *registryv1.WatchResponse
	overflow chan struct{} // closed when msgs was full
	done     chan error    // the stream's error (buffered)
}

// startWatchPump buffers first (the message already read, if not nil) and
// starts the pump's goroutine, owned by wg; it ends at recv's first error
// (the stream's context ending) or at an overflow.
func startWatchPump(wg *sync.WaitGroup, first *registryv1.WatchResponse, recv func() (*registryv1.WatchResponse, error), buffer int) *watchPump {
	p := &watchPump{
		msgs:     make(chan *registryv1.WatchResponse, max(buffer, 1)),
		overflow: make(chan struct{}),
		done:     make(chan error, 1),
	}
	if first != nil {
		p.msgs <- first
	}
	wg.Go(func() {
		for {
			m, err := recv()
			if err != nil {
				p.done <- err
				return
			}
			select {
			case p.msgs <- m:
			default:
				close(p.overflow)
				return
			}
		}
	})
	return p
}

// consoleSampler keeps the last consoleSamples per-second rates of beats
// received by this node and expirations applied, read from the node's own
// counters.
type consoleSampler struct {
	gatherer prometheus.Gatherer

	mu          sync.Mutex
	beats, exps []float64 // oldest first
	lastB       float64
	lastE       float64
	primed      bool
}

// consoleSeries is the sparklines' data, oldest first, one value a second.
type consoleSeries struct {
	BeatsPerSecond       []float64 `json:"beats_per_second"`
	ExpirationsPerSecond []float64 `json:"expirations_per_second"`
}

func (s *consoleSampler) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sample()
		}
	}
}

func (s *consoleSampler) sample() {
	mfs, err := s.gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return
	}
	var beats, exps float64
	for _, mf := range mfs {
		switch mf.GetName() {
		case "registry_beats_received_total":
			for _, m := range mf.GetMetric() {
				beats += m.GetCounter().GetValue()
			}
		case "registry_deregistrations_total":
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "reason" && l.GetValue() == "expired" {
						exps += m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	s.add(beats, exps)
}

// add records the counters' values one second after the previous ones.
func (s *consoleSampler) add(beats, exps float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.primed {
		s.beats = appendRing(s.beats, max(beats-s.lastB, 0))
		s.exps = appendRing(s.exps, max(exps-s.lastE, 0))
	}
	s.lastB, s.lastE, s.primed = beats, exps, true
}

func appendRing(xs []float64, v float64) []float64 {
	if len(xs) == consoleSamples {
		copy(xs, xs[1:])
		xs = xs[:len(xs)-1]
	}
	return append(xs, v)
}

func (s *consoleSampler) series() consoleSeries {
	s.mu.Lock()
	defer s.mu.Unlock()
	return consoleSeries{
		BeatsPerSecond:       append([]float64{}, s.beats...),
		ExpirationsPerSecond: append([]float64{}, s.exps...),
	}
}
