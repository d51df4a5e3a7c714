package consulapi

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

func isNotFound(err error) bool { return status.Code(err) == codes.NotFound }

// queryOptions are a read's Consul query parameters.
type queryOptions struct {
	consistency registryv1.Consistency
	index       uint64        // ?index: block until past it (0: answer now)
	wait        time.Duration // ?wait, capped, without jitter
}

// parseQuery reads ?stale, ?consistent, ?index, ?wait, ?dc and ?filter.
// ?stale is our STALE (any node answers from its replica), ?consistent
// LINEARIZABLE, neither DEFAULT (the leader answers), as in Consul.
func (s *Server) parseQuery(r *http.Request) (queryOptions, error) {
	q := r.URL.Query()
	o := queryOptions{wait: s.cfg.DefaultWait}
	_, stale := q["stale"]
	_, consistent := q["consistent"]
	switch {
	case stale && consistent:
		return o, badRequest("stale", "and consistent cannot both be set")
	case stale:
		o.consistency = registryv1.Consistency_CONSISTENCY_STALE
	case consistent:
		o.consistency = registryv1.Consistency_CONSISTENCY_LINEARIZABLE
	}
	if v := q.Get("index"); v != "" {
		i, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return o, badRequest("index", "%q is not a non-negative integer", v)
		}
		o.index = i
	}
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return o, badRequest("wait", "%q is not a duration (e.g. \"30s\", at most %v)", v, s.cfg.MaxWait)
		}
		o.wait = min(d, s.cfg.MaxWait)
	}
	if dc := q.Get("dc"); dc != "" && dc != s.cfg.Datacenter {
		return o, fmt.Errorf("dc %q: this API serves datacenter %q only: %w", dc, s.cfg.Datacenter, ErrUnsupported)
	}
	if q.Get("filter") != "" {
		return o, fmt.Errorf("filter: %w", ErrUnsupported)
	}
	return o, nil
}

// readResult is what a read returns: its body and the index and leader
// knowledge of the replica that answered.
type readResult struct {
	body        any
	index       uint64
	knownLeader bool
}

// blockingRead answers a read: with ?index=N it first waits, on a watch
// of service ("" for all) through the node's gRPC server, until an event
// past N or the wait (plus jitter up to wait/16) ends, then reads.
func (s *Server) blockingRead(w http.ResponseWriter, r *http.Request, service string, read func(context.Context, queryOptions) (readResult, error)) {
	o, err := s.parseQuery(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	ctx := s.callContext(r)
	if o.index > 0 {
		// An index past what the reading replica has (from another node,
		// or from before a restore) answers at once: the lower
		// X-Consul-Index tells the client to start again, as Consul's
		// clients do when the index goes back. A follower that lags the
		// leader a little asks the read, which the leader may answer.
		behind := false
		if o.index > s.cfg.Cluster.AppliedIndex() {
			res, err := read(ctx, o)
			if err != nil {
				s.fail(w, err)
				return
			}
			behind = res.index < o.index
		}
		if !behind {
			if err := s.waitPast(ctx, w, service, o); err != nil {
				s.fail(w, err)
				return
			}
		}
	}
	res, err := read(ctx, o)
	if err != nil {
		s.fail(w, err)
		return
	}
	h := w.Header()
	// Consul clients misbehave on index 0: the index is at least 1.
	h.Set("X-Consul-Index", strconv.FormatUint(max(res.index, 1), 10))
	h.Set("X-Consul-KnownLeader", strconv.FormatBool(res.knownLeader))
	var contact time.Duration
	if o.consistency == registryv1.Consistency_CONSISTENCY_STALE {
		contact = s.cfg.Cluster.LastContact()
	}
	h.Set("X-Consul-LastContact", strconv.FormatInt(contact.Milliseconds(), 10))
	h.Set("X-Consul-Effective-Consistency", map[registryv1.Consistency]string{
		registryv1.Consistency_CONSISTENCY_DEFAULT:      "leader",
		registryv1.Consistency_CONSISTENCY_STALE:        "stale",
		registryv1.Consistency_CONSISTENCY_LINEARIZABLE: "consistent",
	}[o.consistency])
	writeJSON(w, http.StatusOK, res.body)
}

// waitPast returns when service has an event past o.index, or the wait
// ends. The request's read and write deadlines are extended to cover the
// wait.
func (s *Server) waitPast(ctx context.Context, w http.ResponseWriter, service string, o queryOptions) error {
	wait := o.wait
	if wait > 0 {
		wait += rand.N(wait/16 + 1)
	}
	// The server's read deadline (its background read of the connection)
	// and write deadline must not end the wait.
	rc, deadline := http.NewResponseController(w), time.Now().Add(wait+s.cfg.WriteTimeout)
	_ = rc.SetReadDeadline(deadline)
	_ = rc.SetWriteDeadline(deadline)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	stream, err := s.registry.Watch(wctx, &registryv1.WatchRequest{Service: service, AfterIndex: o.index})
	if err == nil {
		_, err = stream.Recv() // a reset or events: the result may have changed
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case wctx.Err() != nil: // the wait ended
		return nil
	}
	return err
}

// instances reads every instance (HEALTHY and SUSPECT) the token may read.
func (s *Server) instances(ctx context.Context, c registryv1.Consistency) ([]*registryv1.Instance, readResult, error) {
	list, err := s.registry.ListServices(ctx, &registryv1.ListServicesRequest{Consistency: c})
	if err != nil {
		return nil, readResult{}, err
	}
	res := readResult{index: list.GetIndex(), knownLeader: list.GetKnownLeader()}
	var all []*registryv1.Instance
	for _, svc := range list.GetServices() {
		got, err := s.registry.GetService(ctx, &registryv1.GetServiceRequest{Service: svc.GetService(), Consistency: c, IncludeSuspect: true})
		if err != nil {
			if isNotFound(err) || status.Code(err) == codes.PermissionDenied {
				continue
			}
			return nil, readResult{}, err
		}
		res.index = max(res.index, got.GetIndex())
		all = append(all, got.GetInstances()...)
	}
	return all, res, nil
}

// service reads one service's instances (SUSPECT too); an unknown service
// has none.
func (s *Server) service(ctx context.Context, name string, c registryv1.Consistency) ([]*registryv1.Instance, readResult, error) {
	got, err := s.registry.GetService(ctx, &registryv1.GetServiceRequest{Service: name, Consistency: c, IncludeSuspect: true})
	if err != nil {
		return nil, readResult{}, err
	}
	return got.GetInstances(), readResult{index: got.GetIndex(), knownLeader: got.GetKnownLeader()}, nil
}

func (s *Server) view() view {
	return view{node: s.cfg.Cluster.NodeID(), dc: s.cfg.Datacenter, now: s.cfg.Clock()}
}

// agentServices implements GET /v1/agent/services: every instance the
// token may read, by ID (of equal IDs, the first service in name order).
func (s *Server) agentServices(w http.ResponseWriter, r *http.Request) {
	s.blockingRead(w, r, "", func(ctx context.Context, o queryOptions) (readResult, error) {
		all, res, err := s.instances(ctx, o.consistency)
		v, out := s.view(), map[string]agentService{}
		for _, in := range all {
			if _, dup := out[in.GetId()]; !dup {
				out[in.GetId()] = v.agentService(in)
			}
		}
		res.body = out
		return res, err
	})
}

// agentService implements GET /v1/agent/service/:id.
func (s *Server) agentService(w http.ResponseWriter, r *http.Request) {
	ctx := s.callContext(r)
	rf, err := s.resolve(ctx, r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	ins, _, err := s.service(ctx, rf.service, registryv1.Consistency_CONSISTENCY_DEFAULT)
	if err != nil {
		s.fail(w, err)
		return
	}
	for _, in := range ins {
		if in.GetId() == rf.id {
			writeJSON(w, http.StatusOK, s.view().agentService(in))
			return
		}
	}
	s.fail(w, fmt.Errorf("%w: %q", ErrUnknownService, rf.id))
}

// agentChecks implements GET /v1/agent/checks.
func (s *Server) agentChecks(w http.ResponseWriter, r *http.Request) {
	s.blockingRead(w, r, "", func(ctx context.Context, o queryOptions) (readResult, error) {
		all, res, err := s.instances(ctx, o.consistency)
		v, out := s.view(), map[string]healthCheck{}
		for _, in := range all {
			c := v.check(in)
			if _, dup := out[c.CheckID]; !dup {
				out[c.CheckID] = c
			}
		}
		res.body = out
		return res, err
	})
}

// agentSelf implements GET /v1/agent/self: the datacenter and node name
// clients (Prometheus's consul_sd) read from it.
func (s *Server) agentSelf(w http.ResponseWriter, _ *http.Request) {
	node := s.cfg.Cluster.NodeID()
	writeJSON(w, http.StatusOK, map[string]map[string]any{
		"Config": {"Datacenter": s.cfg.Datacenter, "NodeName": node, "Server": true},
		"Member": {"Name": node},
	})
}

func (s *Server) datacenters(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, []string{s.cfg.Datacenter})
}

// catalogServices implements GET /v1/catalog/services: name → tags.
func (s *Server) catalogServices(w http.ResponseWriter, r *http.Request) {
	s.blockingRead(w, r, "", func(ctx context.Context, o queryOptions) (readResult, error) {
		all, res, err := s.instances(ctx, o.consistency)
		out := map[string][]string{}
		for _, in := range all {
			have := out[in.GetService()]
			if have == nil {
				have = []string{}
			}
			for _, t := range tags(in) {
				if !slices.Contains(have, t) {
					have = append(have, t)
				}
			}
			out[in.GetService()] = have
		}
		res.body = out
		return res, err
	})
}

// catalogService implements GET /v1/catalog/service/:service[?tag=...].
func (s *Server) catalogService(w http.ResponseWriter, r *http.Request) {
	name, want := r.PathValue("service"), r.URL.Query()["tag"]
	s.blockingRead(w, r, name, func(ctx context.Context, o queryOptions) (readResult, error) {
		ins, res, err := s.service(ctx, name, o.consistency)
		v, out := s.view(), []catalogService{}
		for _, in := range ins {
			if hasTags(in, want) {
				out = append(out, v.catalogService(in))
			}
		}
		res.body = out
		return res, err
	})
}

// healthService implements GET /v1/health/service/:service[?passing][&tag=...].
func (s *Server) healthService(w http.ResponseWriter, r *http.Request) {
	name, q := r.PathValue("service"), r.URL.Query()
	passing := false
	if v, ok := q["passing"]; ok {
		passing = true
		if len(v) > 0 && v[0] != "" {
			b, err := strconv.ParseBool(v[0])
			if err != nil {
				s.fail(w, badRequest("passing", "%q is not true or false", v[0]))
				return
			}
			passing = b
		}
	}
	s.blockingRead(w, r, name, func(ctx context.Context, o queryOptions) (readResult, error) {
		ins, res, err := s.service(ctx, name, o.consistency)
		v, out := s.view(), []serviceEntry{}
		for _, in := range ins {
			if !hasTags(in, q["tag"]) {
				continue
			}
			e := v.serviceEntry(in)
			if passing && e.Checks[0].Status != statusPassing {
				continue
			}
			out = append(out, e)
		}
		res.body = out
		return res, err
	})
}

// statusLeader implements GET /v1/status/leader: the leader's Raft
// address, "" when none is known.
func (s *Server) statusLeader(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Cluster.LeaderRaftAddr())
}

// statusPeers implements GET /v1/status/peers: the voters' Raft addresses.
func (s *Server) statusPeers(w http.ResponseWriter, _ *http.Request) {
	peers := s.cfg.Cluster.Peers()
	if peers == nil {
		peers = []string{}
	}
	writeJSON(w, http.StatusOK, peers)
}
