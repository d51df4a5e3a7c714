package composetest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/tlsutil"
)

// The registrations: 200 instances over 5 services, kept alive by 4
// clients (50 each, each with its own beat stream, otherwise the client's
// defaults) beating every second with a 5 s TTL (SUSPECT after 2.5 s).
var spec = fleetSpec{
	clients:   4,
	perClient: 50,
	services:  5,
	interval:  time.Second,
	ttl:       5 * time.Second,
}

// Bounds of the waits.
const (
	readyTimeout    = 90 * time.Second // from compose up or start to healthy containers
	electionTimeout = 30 * time.Second // to agree on a leader
	// A new leader must be elected within this after the old one is
	// killed: Raft's heartbeat timeout is 1 s, an election 1-3 s.
	electionBound  = 10 * time.Second
	catchUpTimeout = 60 * time.Second
	settleTimeout  = 60 * time.Second
)

func TestComposeCluster(t *testing.T) {
	if os.Getenv(envEnable) != "1" {
		t.Skip("needs Docker; run make compose-test (sets " + envEnable + "=1)")
	}
	image := os.Getenv(envImage)
	if image == "" {
		image = defaultImage
	}
	if _, err := docker(t.Context(), "image", "inspect", image); err != nil {
		t.Fatalf("image %s: %v (make image builds it)", image, err)
	}
	begin := time.Now()
	p := startProject(t, image)
	p.waitHealthy(t, readyTimeout, p.nodes...)
	leader := p.waitLeader(t, electionTimeout, p.nodes...)
	t.Logf("three healthy nodes, leader %s, %v after compose up", leader, time.Since(begin).Round(time.Millisecond))

	var endpoints []string
	for _, n := range p.nodes {
		endpoints = append(endpoints, n.grpc)
	}
	if !t.Run("TLSRequired", func(t *testing.T) { tlsRequired(t, p) }) {
		return
	}
	if !t.Run("TokenRequired", func(t *testing.T) { tokenRequired(t, p) }) {
		return
	}
	rec := newRecorder(t, endpoints, p.tls)
	f := newFleet(t, endpoints, p.tls, spec)
	t.Logf("registered %d instances through %d clients", len(f.keys), len(f.clients))
	settle(t, p, rec, f, time.Now())

	phases := []struct {
		name string
		run  func(t *testing.T, p *project, rec *recorder, f *fleet)
	}{
		{"KillLeader", killLeader},
		{"DisconnectFollower", disconnectFollower},
		{"RestartProject", restartProject},
		{"PauseLeader", pauseLeader},
	}
	for _, ph := range phases {
		recMark, fleetMark := rec.mark(), f.mark()
		start := time.Now()
		ok := t.Run(ph.name, func(t *testing.T) {
			ph.run(t, p, rec, f)
			checkNoLoss(t, rec, recMark, f, fleetMark)
		})
		t.Logf("%s: %v", ph.name, time.Since(start).Round(time.Millisecond))
		if !ok {
			return // the next phase needs a healthy cluster
		}
	}
	// The end: every node holds the same 200 instances.
	p.waitConverged(t, f)
}

// tlsRequired: every node refuses a plaintext client and a TLS client
// without a certificate, on its gRPC and its HTTP port, and answers one
// with the client certificate of deploy/secrets (the control: the refusals
// are not a node that is down). Over HTTP the client checks the name it
// dialed, 127.0.0.1, as curl does. The TLS clients send the management
// token over gRPC (Cluster.Status needs operator:read); /readyz needs none.
func tlsRequired(t *testing.T, p *project) {
	full, err := p.tls.config()
	if err != nil {
		t.Fatal(err)
	}
	noCert, err := tlsutil.ClientConfig(p.tls.ca, "", "")
	if err != nil {
		t.Fatal(err)
	}
	clients := []struct {
		name string
		tls  *tls.Config // nil: plaintext
		ok   bool
	}{
		{"plaintext", nil, false},
		{"TLS without a client certificate", noCert, false},
		{"TLS with the client certificate", full, true},
	}
	for _, n := range p.nodes {
		for _, c := range clients {
			gerr := grpcStatus(t.Context(), n, c.tls, p.tls.token)
			herr := httpReady(t.Context(), n, c.tls)
			for _, r := range []struct {
				port string
				err  error
			}{{"gRPC " + n.grpc, gerr}, {"HTTP " + n.http, herr}} {
				switch {
				case c.ok && r.err != nil:
					t.Errorf("%s, %s: %s client refused: %v", n, r.port, c.name, r.err)
				case !c.ok && r.err == nil:
					t.Errorf("%s, %s: %s client answered, want it refused", n, r.port, c.name)
				case !c.ok:
					t.Logf("%s, %s: %s client refused: %v", n, r.port, c.name, r.err)
				}
			}
		}
	}
}

// grpcStatus calls Cluster.Status on n through a connection of its own,
// plaintext if cfg is nil, else over TLS with the token (if not empty).
func grpcStatus(ctx context.Context, n *node, cfg *tls.Config, token string) error {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if cfg != nil {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
		if token != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
		}
	}
	conn, err := grpc.NewClient(n.grpc, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = registryv1.NewClusterClient(conn).Status(ctx, &registryv1.StatusRequest{})
	return err
}

// tokenRequired: the cluster came up with ACLs on and bootstrapped with
// the management token of deploy/secrets. On every node, over mTLS, a call
// with no token or an unknown one is refused UNAUTHENTICATED (gRPC: a read,
// a write, a Cluster call; HTTP: 401), the one-time bootstrap is refused
// as done already, and the same calls with the management token are
// answered (the control).
func tokenRequired(t *testing.T, p *project) {
	full, err := p.tls.config()
	if err != nil {
		t.Fatal(err)
	}
	const unknown = "00000000-0000-4000-8000-000000000000"
	for _, n := range p.nodes {
		conn, err := grpc.NewClient(n.grpc, grpc.WithTransportCredentials(credentials.NewTLS(full)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		reg, cl := registryv1.NewRegistryClient(conn), registryv1.NewClusterClient(conn)
		calls := []struct {
			name string
			call func(context.Context) error
		}{
			{"Registry.ListServices", func(ctx context.Context) error {
				_, err := reg.ListServices(ctx, &registryv1.ListServicesRequest{})
				return err
			}},
			{"Registry.Register", func(ctx context.Context) error {
				_, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
					Service: "intruder", Id: "i1", Address: "127.0.0.9:80", Ttl: durationpb.New(30 * time.Second)}})
				return err
			}},
			{"Cluster.Status", func(ctx context.Context) error {
				_, err := cl.Status(ctx, &registryv1.StatusRequest{})
				return err
			}},
		}
		for _, c := range calls {
			for _, tok := range []struct{ name, secret string }{{"no token", ""}, {"an unknown token", unknown}} {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				if tok.secret != "" {
					ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok.secret)
				}
				err := c.call(ctx)
				cancel()
				if code := grpcstatus.Code(err); code != codes.Unauthenticated {
					t.Errorf("%s: %s with %s: %v, want Unauthenticated", n, c.name, tok.name, err)
				}
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err = registryv1.NewACLClient(conn).Bootstrap(ctx, &registryv1.ACLBootstrapRequest{})
		cancel()
		if code := grpcstatus.Code(err); code != codes.FailedPrecondition {
			t.Errorf("%s: ACL.Bootstrap: %v, want FailedPrecondition (bootstrapped at start with the management token)", n, err)
		}
		for _, c := range calls[:1] {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			err := c.call(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.tls.token))
			cancel()
			if err != nil {
				t.Errorf("%s: %s with the management token: %v", n, c.name, err)
			}
		}
		for _, tok := range []struct {
			secret string
			want   int
		}{{"", http.StatusUnauthorized}, {unknown, http.StatusUnauthorized}, {p.tls.token, http.StatusOK}} {
			if got, err := httpGet(t.Context(), n, full, "/v1/services", tok.secret); err != nil || got != tok.want {
				t.Errorf("%s: GET /v1/services (token set: %v): %d, %v; want %d", n, tok.secret != "", got, err, tok.want)
			}
		}
	}
}

// httpGet GETs path on n over https with the client certificate and, if
// not empty, the token, and returns the status code.
func httpGet(ctx context.Context, n *node, cfg *tls.Config, path, token string) (int, error) {
	cfg = cfg.Clone()
	cfg.ServerName = "" // the URL's host
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+n.http+path, nil)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, nil
}

// httpReady asks n's /readyz, over http if cfg is nil, else over https
// checking that n's certificate names 127.0.0.1. An answer other than
// 200 is an error.
func httpReady(ctx context.Context, n *node, cfg *tls.Config) error {
	url := "http://" + n.http + "/readyz"
	tr := &http.Transport{}
	if cfg != nil {
		url = "https://" + n.http + "/readyz"
		cfg = cfg.Clone()
		cfg.ServerName = "" // the URL's host
		tr.TLSClientConfig = cfg
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// killLeader: docker kill the leader → a new leader within seconds, no
// instance lost or expired; docker start it → it catches up.
func killLeader(t *testing.T, p *project, rec *recorder, f *fleet) {
	old := p.waitLeader(t, electionTimeout, p.nodes...)
	others := without(p.nodes, old)
	id := p.containerOrFail(t, old)
	onIt := f.clientsOn(old)
	killed := time.Now()
	p.dockerOrFail(t, "kill", id)
	leader := p.waitLeader(t, electionTimeout, others...)
	took := time.Since(killed)
	t.Logf("killed leader %s (the beat stream of %d of %d clients was on it); %s leads %v later",
		old, onIt, len(f.clients), leader, took.Round(time.Millisecond))
	if took > electionBound {
		t.Errorf("a new leader took %v after the leader was killed, want at most %v", took, electionBound)
	}
	settle(t, p, rec, f, time.Now())

	state := p.dockerOrFail(t, "inspect", "--format", "{{.State.Status}}", id)
	t.Logf("%s's container is %s; docker start", old, state)
	p.dockerOrFail(t, "start", id)
	p.waitCaughtUp(t, catchUpTimeout, old, others)
	p.waitHealthy(t, readyTimeout, old)
	p.waitConverged(t, f)
}

// disconnectFollower: docker network disconnect a follower for longer
// than the TTL, reconnect it → it catches up, every node holds the same
// state, and no instance was lost.
func disconnectFollower(t *testing.T, p *project, rec *recorder, f *fleet) {
	leader := p.waitLeader(t, electionTimeout, p.nodes...)
	// The follower most clients beat through, so that the partition
	// strands beat streams too.
	others := without(p.nodes, leader)
	follower := slices.MaxFunc(others, func(a, b *node) int { return f.clientsOn(a) - f.clientsOn(b) })
	onIt := f.clientsOn(follower)
	rest := without(p.nodes, follower)
	network, aliases := p.network(t, follower)
	if !slices.Contains(aliases, follower.service) {
		t.Fatalf("%s's aliases on %s are %v, want %s among them", follower, network, aliases, follower.service)
	}
	id := p.containerOrFail(t, follower)
	p.dockerOrFail(t, "network", "disconnect", network, id)
	cut := time.Now()
	t.Logf("disconnected %s from %s (the beat stream of %d of %d clients was on it)", follower, network, onIt, len(f.clients))

	// The majority keeps a leader and serves while the follower is away.
	p.waitLeader(t, electionTimeout, rest...)
	// The partition lasts longer than the TTL: the fault's duration, not
	// a wait for a state.
	if d := spec.ttl + 2*time.Second - time.Since(cut); d > 0 {
		select {
		case <-time.After(d):
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		}
	}
	// Back under its service name, which the other nodes dial.
	p.dockerOrFail(t, "network", "connect", "--alias", follower.service, network, id)
	t.Logf("reconnected %s after %v", follower, time.Since(cut).Round(time.Millisecond))

	p.waitCaughtUp(t, catchUpTimeout, follower, rest)
	p.waitLeader(t, electionTimeout, p.nodes...)
	settle(t, p, rec, f, time.Now())
	p.waitConverged(t, f)
}

// restartProject: compose stop, then compose start → every registration
// is still there. The clients keep beating: their streams fail over and
// back off while no node answers, and beat again once a leader is up.
func restartProject(t *testing.T, p *project, rec *recorder, f *fleet) {
	p.composeOrFail(t, stopTimeout, "stop")
	for _, n := range p.nodes {
		if h, err := p.health(t.Context(), n); err != nil || h != "exited" {
			t.Fatalf("after compose stop %s is %q (%v), want exited", n, h, err)
		}
	}
	p.composeOrFail(t, upTimeout, "start")
	p.waitHealthy(t, readyTimeout, p.nodes...)
	leader := p.waitLeader(t, electionTimeout, p.nodes...)
	t.Logf("restarted: leader %s", leader)
	settle(t, p, rec, f, time.Now())
	p.waitConverged(t, f)
}

// pauseLeader: docker pause the leader for 2 s → no instance expires.
func pauseLeader(t *testing.T, p *project, rec *recorder, f *fleet) {
	old := p.waitLeader(t, electionTimeout, p.nodes...)
	id := p.containerOrFail(t, old)
	onIt := f.clientsOn(old)
	p.dockerOrFail(t, "pause", id)
	paused := time.Now()
	// The fault's duration, not a wait for a state.
	select {
	case <-time.After(2 * time.Second):
	case <-t.Context().Done():
		t.Fatal(t.Context().Err())
	}
	p.dockerOrFail(t, "unpause", id)
	t.Logf("paused leader %s (the beat stream of %d of %d clients was on it) for %v", old, onIt, len(f.clients), time.Since(paused).Round(time.Millisecond))
	leader := p.waitLeader(t, electionTimeout, p.nodes...)
	t.Logf("leader after the pause: %s", leader)
	settle(t, p, rec, f, time.Now())
	p.waitConverged(t, f)
}

func without(nodes []*node, n *node) []*node {
	return slices.DeleteFunc(slices.Clone(nodes), func(m *node) bool { return m == n })
}

// settle waits until every instance of the fleet is registered and
// HEALTHY with a beat after since, by a linearizable read, and the
// recorder has received every event up to a barrier written after that
// read. It reports instances registered again (a new incarnation) since
// the last settle.
func settle(t *testing.T, p *project, rec *recorder, f *fleet, since time.Time) {
	t.Helper()
	var got map[key]*registryv1.Instance
	poll.Eventually(t, settleTimeout, func(ctx context.Context) error {
		insts, idx, err := p.readAll(ctx, registryv1.Consistency_CONSISTENCY_LINEARIZABLE)
		if err != nil {
			return err
		}
		got = make(map[key]*registryv1.Instance, len(insts))
		for _, in := range insts {
			if in.Service != markerService {
				got[key{in.Service, in.Id}] = in
			}
		}
		for _, k := range f.keys {
			in, ok := got[k]
			switch {
			case !ok:
				return fmt.Errorf("%s is not registered (index %d)", k, idx)
			case in.State != registryv1.InstanceState_INSTANCE_STATE_HEALTHY:
				return fmt.Errorf("%s is %v", k, in.State)
			case !in.LastBeatAt.AsTime().After(since):
				return fmt.Errorf("%s last beat at %v, not yet after %v", k, in.LastBeatAt.AsTime().Format(time.StampMilli), since.Format(time.StampMilli))
			}
		}
		if len(got) != len(f.keys) {
			return fmt.Errorf("%d instances registered, want %d", len(got), len(f.keys))
		}
		return nil
	})
	for _, k := range f.keys {
		if inc := got[k].Incarnation; inc != f.current[k] {
			t.Errorf("%s was registered again: incarnation %d, was %d", k, inc, f.current[k])
			f.current[k] = inc
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), settleTimeout)
	defer cancel()
	index, err := p.barrier(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.waitIndex(ctx, index); err != nil {
		t.Fatal(err)
	}
	view := rec.viewKeys()
	for _, k := range f.keys {
		if !view[k] {
			t.Errorf("the watch's view lacks %s at index %d", k, index)
		}
	}
	if len(view) != len(f.keys) {
		t.Errorf("the watch's view holds %d instances, want %d", len(view), len(f.keys))
	}
}

// checkNoLoss fails the test for any instance removed since the marks:
// an EXPIRED or DEREGISTERED event, an instance a reset removed unseen, or
// a client that had to register an instance again. It logs the SUSPECT
// verdicts and the clients' Lost events, which are allowed.
func checkNoLoss(t *testing.T, rec *recorder, recMark int, f *fleet, fleetMark int) {
	t.Helper()
	counts := map[string]int{}
	for _, e := range rec.since(recMark) {
		counts[e.ev.Type.String()]++
		switch e.ev.Type {
		case client.EventExpired, client.EventDeregistered:
			t.Errorf("watch: %s %s at index %d (%v since its last beat)", e.ev.Instance.Service+"/"+e.ev.Instance.ID, e.ev.Type, e.ev.Index, e.ev.SinceLastBeat)
		case client.EventReset:
			if len(e.vanished) > 0 {
				t.Errorf("watch: a reset at index %d removed %d instances unseen: %v", e.ev.Index, len(e.vanished), e.vanished)
			}
		}
	}
	regCounts := map[string]int{}
	for _, e := range f.since(fleetMark) {
		regCounts[e.ev.Type.String()]++
		switch e.ev.Type {
		case client.Reregistered, client.Deregistered:
			t.Errorf("client: %s %s (incarnation %d): %s", e.key, e.ev.Type, e.ev.Incarnation, e.ev.Reason)
		}
	}
	t.Logf("watch events: %v; registration events: %v", counts, regCounts)
}

// markerService holds one instance that barrier registers again and
// again; the recorder and the checks leave it out.
const markerService = "marker"

// barrier writes an event (the marker instance registered with a new
// incarnation) through the first node that takes it, and returns its
// index: a watcher that received it has received every event before.
func (p *project) barrier(ctx context.Context) (uint64, error) {
	p.markers++
	req := &registryv1.RegisterRequest{Instance: &registryv1.Instance{
		Service: markerService, Id: "barrier", Address: "127.0.0.1:1", Incarnation: p.markers,
		BeatInterval: durationpb.New(time.Hour), Ttl: durationpb.New(24 * time.Hour),
	}}
	var errs []error
	for _, n := range p.nodes {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := n.registry().Register(cctx, req)
		cancel()
		if err == nil {
			return resp.Index, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", n, err))
	}
	return 0, fmt.Errorf("barrier: %w", errors.Join(errs...))
}

// readAll reads every instance (SUSPECT ones too) of every service with
// the given consistency through the first node that answers, and returns
// them with the lowest index of the answers.
func (p *project) readAll(ctx context.Context, c registryv1.Consistency) ([]*registryv1.Instance, uint64, error) {
	var errs []error
	for _, n := range p.nodes {
		insts, idx, err := readNode(ctx, n, c)
		if err == nil {
			return insts, idx, nil
		}
		errs = append(errs, err)
	}
	return nil, 0, errors.Join(errs...)
}

// readNode reads every instance of every service from n.
func readNode(ctx context.Context, n *node, c registryv1.Consistency) ([]*registryv1.Instance, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list, err := n.registry().ListServices(ctx, &registryv1.ListServicesRequest{Consistency: c})
	if err != nil {
		return nil, 0, fmt.Errorf("%s: list services: %w", n, err)
	}
	index := list.Index
	var out []*registryv1.Instance
	for _, s := range list.Services {
		resp, err := n.registry().GetService(ctx, &registryv1.GetServiceRequest{Service: s.Service, Consistency: c, IncludeSuspect: true})
		if err != nil {
			return nil, 0, fmt.Errorf("%s: get service %s: %w", n, s.Service, err)
		}
		index = min(index, resp.Index)
		out = append(out, resp.Instances...)
	}
	return out, index, nil
}

// digest is a hash of a node's registry apart from beats: every instance's
// registration and verdict, without the last beat's time and index, which
// change every second.
func digest(insts []*registryv1.Instance) string {
	sorted := slices.Clone(insts)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Service != sorted[j].Service {
			return sorted[i].Service < sorted[j].Service
		}
		return sorted[i].Id < sorted[j].Id
	})
	h := sha256.New()
	for _, in := range sorted {
		in = proto.Clone(in).(*registryv1.Instance)
		in.LastBeatAt, in.LastBeatIndex = nil, 0
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(in)
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// waitConverged waits until every node's own replica (STALE reads) holds
// the fleet's instances and the same state (digest), each at an index no
// lower than the leader's applied index when the wait began.
func (p *project) waitConverged(t *testing.T, f *fleet) {
	t.Helper()
	var target uint64
	var last []string
	poll.Eventually(t, catchUpTimeout, func(ctx context.Context) error {
		if target == 0 {
			_, idx, err := p.readAll(ctx, registryv1.Consistency_CONSISTENCY_LINEARIZABLE)
			if err != nil {
				return err
			}
			target = idx
		}
		var digests []string
		last = last[:0]
		for _, n := range p.nodes {
			insts, idx, err := readNode(ctx, n, registryv1.Consistency_CONSISTENCY_STALE)
			if err != nil {
				return err
			}
			if idx < target {
				return fmt.Errorf("%s answered at index %d, below %d", n, idx, target)
			}
			if len(insts) != len(f.keys)+1 {
				return fmt.Errorf("%s holds %d instances, want %d and the marker", n, len(insts), len(f.keys))
			}
			d := digest(insts)
			digests = append(digests, d)
			last = append(last, fmt.Sprintf("%s %s@%d", n.id, d, idx))
		}
		for _, d := range digests[1:] {
			if d != digests[0] {
				return fmt.Errorf("the nodes differ: %s", strings.Join(last, ", "))
			}
		}
		return nil
	})
	t.Logf("converged: %s", strings.Join(last, ", "))
}
