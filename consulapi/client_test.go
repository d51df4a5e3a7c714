package consulapi_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
)

// consulCluster starts three in-process nodes serving the Consul API on
// 127.0.0.1 (port 0).
func consulCluster(t *testing.T, configure func(*node.Config)) *nodetest.Cluster {
	t.Helper()
	c := nodetest.New(t, 3, func(cfg *node.Config) {
		cfg.ConsulAddr = "127.0.0.1:0"
		if configure != nil {
			configure(cfg)
		}
	})
	c.Leader()
	return c
}

// consulClient is hashicorp/consul/api's client for node nd, unmodified.
func consulClient(t *testing.T, nd *node.Node, token string) *consul.Client {
	t.Helper()
	cl, err := consul.NewClient(&consul.Config{Address: nd.ConsulAddr(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// ttlRegistration is a service with a TTL check, as a Consul client sends it.
func ttlRegistration(name, id string, port int, ttl, deregisterAfter string) *consul.AgentServiceRegistration {
	return &consul.AgentServiceRegistration{
		Name: name, ID: id, Address: "127.0.0.1", Port: port,
		Tags: []string{"blue", "v2"}, Meta: map[string]string{"version": "2.1"},
		Check: &consul.AgentServiceCheck{TTL: ttl, DeregisterCriticalServiceAfter: deregisterAfter},
	}
}

// passUntil passes check every interval until the returned stop is called.
func passUntil(t *testing.T, cl *consul.Client, check string, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			if err := cl.Agent().PassTTL(check, "ok"); err != nil && ctx.Err() == nil {
				t.Logf("PassTTL(%s): %v", check, err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// healthIDs lists "id status" of a health answer, sorted.
func healthIDs(entries []*consul.ServiceEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Service.ID+" "+e.Checks.AggregatedStatus())
	}
	slices.Sort(out)
	return out
}

func TestConsulClientRegistersKeepsAliveDiscoversAndDeregisters(t *testing.T) {
	c := consulCluster(t, nil)
	leader := c.Leader()
	follower := (leader + 1) % 3
	// Writes go to a follower's Consul API: they must reach the leader
	// through the node's gRPC forwarding.
	cl := consulClient(t, c.Nodes[follower], "")

	got, err := cl.Status().Leader()
	if want := c.Nodes[leader].RaftAddr(); err != nil || got != want {
		t.Errorf("Status().Leader() = %q, %v; want the leader's Raft address %q", got, err, want)
	}
	peers, err := cl.Status().Peers()
	if err != nil || len(peers) != 3 {
		t.Errorf("Status().Peers() = %q, %v; want the three Raft addresses", peers, err)
	}

	// web-1: TTL 2s, kept alive by passes every 300ms.
	if err := cl.Agent().ServiceRegister(ttlRegistration("web", "web-1", 8081, "2s", "")); err != nil {
		t.Fatalf("ServiceRegister web-1: %v", err)
	}
	registered := time.Now()
	stopPass := passUntil(t, cl, "service:web-1", 300*time.Millisecond)

	entries, meta, err := cl.Health().Service("web", "", true, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("Health().Service(web, passing) = %v, %v; want web-1", healthIDs(entries), err)
	}
	e := entries[0]
	if e.Service.Address != "127.0.0.1" || e.Service.Port != 8081 || e.Service.Meta["version"] != "2.1" ||
		!slices.Equal(e.Service.Tags, []string{"blue", "v2"}) || e.Checks[0].CheckID != "service:web-1" {
		t.Errorf("web-1 as discovered: %+v, checks %+v", e.Service, e.Checks[0])
	}
	if meta.LastIndex == 0 {
		t.Errorf("X-Consul-Index is 0")
	}

	// A blocking query on web returns when a second instance registers,
	// and not for a change to another service.
	type answer struct {
		entries []*consul.ServiceEntry
		meta    *consul.QueryMeta
		err     error
	}
	blocked := make(chan answer, 1)
	go func() {
		entries, meta2, err := cl.Health().Service("web", "", true, &consul.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 30 * time.Second})
		blocked <- answer{entries, meta2, err}
	}()
	if err := cl.Agent().ServiceRegister(ttlRegistration("other", "other-1", 9000, "10s", "")); err != nil {
		t.Fatalf("ServiceRegister other-1: %v", err)
	}
	// Once other-1 is seen, the query on web has had the time to answer;
	// it must not have.
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		e, _, err := cl.Health().Service("other", "", true, &consul.QueryOptions{AllowStale: true})
		if err != nil || len(e) != 1 {
			return fmt.Errorf("other: %v, %v", healthIDs(e), err)
		}
		return nil
	})
	select {
	case a := <-blocked:
		t.Fatalf("the blocking query on web answered before web changed: %v, %v", healthIDs(a.entries), a.err)
	default:
	}
	// web-2: TTL 1s, never passed, removed 3s after it goes critical.
	if err := cl.Agent().ServiceRegister(ttlRegistration("web", "web-2", 8082, "1s", "3s")); err != nil {
		t.Fatalf("ServiceRegister web-2: %v", err)
	}
	select {
	case a := <-blocked:
		if a.err != nil || len(a.entries) != 2 || a.meta.LastIndex <= meta.LastIndex {
			t.Fatalf("the blocking query answered %v, index %v (was %d), %v; want web-1 and web-2 at a higher index",
				healthIDs(a.entries), a.meta, meta.LastIndex, a.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the blocking query did not answer within 20s of web-2's registration")
	}

	// web-2 goes critical, then is gone; web-1, passed, stays passing.
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		e, _, err := cl.Health().Service("web", "", false, nil)
		if got := healthIDs(e); err != nil || !slices.Contains(got, "web-2 critical") {
			return fmt.Errorf("web: %v, %v; want web-2 critical", got, err)
		}
		return nil
	})
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		e, _, err := cl.Health().Service("web", "", false, nil)
		if got := healthIDs(e); err != nil || !slices.Equal(got, []string{"web-1 passing"}) {
			return fmt.Errorf("web: %v, %v; want web-1 passing only", got, err)
		}
		return nil
	})
	// web-1 lives on past three of its TTLs, passing at every look.
	poll.Eventually(t, 30*time.Second, func(context.Context) error {
		e, _, err := cl.Health().Service("web", "", true, nil)
		if got := healthIDs(e); err != nil || !slices.Equal(got, []string{"web-1 passing"}) {
			t.Fatalf("web-1 kept alive by PassTTL: %v, %v", got, err)
		}
		if since := time.Since(registered); since < 6*time.Second {
			return fmt.Errorf("web-1 alive for %v of 3 TTLs (6s)", since.Round(time.Millisecond))
		}
		return nil
	})

	services, _, err := cl.Catalog().Services(nil)
	if err != nil || !slices.Equal(services["web"], []string{"blue", "v2"}) || services["other"] == nil {
		t.Errorf("Catalog().Services() = %v, %v; want web [blue v2] and other", services, err)
	}
	cat, _, err := cl.Catalog().Service("web", "v2", nil)
	if err != nil || len(cat) != 1 || cat[0].ServiceID != "web-1" || cat[0].ServicePort != 8081 {
		t.Errorf("Catalog().Service(web, v2) = %+v, %v", cat, err)
	}
	agentSvcs, err := cl.Agent().Services()
	if err != nil || agentSvcs["web-1"] == nil || agentSvcs["web-1"].Service != "web" {
		t.Errorf("Agent().Services() = %v, %v", agentSvcs, err)
	}
	checks, err := cl.Agent().Checks()
	if err != nil || checks["service:web-1"] == nil || checks["service:web-1"].Status != consul.HealthPassing {
		t.Errorf("Agent().Checks() = %v, %v", checks, err)
	}

	// Deregister through another node: the ID is found there too.
	stopPass()
	other := consulClient(t, c.Nodes[leader], "")
	if err := other.Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatalf("ServiceDeregister web-1: %v", err)
	}
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		e, _, err := cl.Health().Service("web", "", false, nil)
		if err != nil || len(e) != 0 {
			return fmt.Errorf("web after deregister: %v, %v", healthIDs(e), err)
		}
		return nil
	})
	if err := cl.Agent().PassTTL("service:web-1", ""); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("PassTTL after deregister: %v, want a 404", err)
	}
}

func TestConsulAPIRefusesBadInputAndUnsupportedEndpoints(t *testing.T) {
	c := consulCluster(t, nil)
	cl := consulClient(t, c.Nodes[0], "")
	for name, reg := range map[string]struct {
		reg  *consul.AgentServiceRegistration
		want string
	}{
		"no port":       {&consul.AgentServiceRegistration{Name: "web"}, "Port"},
		"bad name":      {&consul.AgentServiceRegistration{Name: "web/1", Port: 80}, "Name"},
		"short ttl":     {&consul.AgentServiceRegistration{Name: "web", Port: 80, Check: &consul.AgentServiceCheck{TTL: "100ms"}}, "Check.TTL"},
		"http check":    {&consul.AgentServiceRegistration{Name: "web", Port: 80, Check: &consul.AgentServiceCheck{HTTP: "http://127.0.0.1/", Interval: "10s"}}, "only TTL checks"},
		"reserved meta": {&consul.AgentServiceRegistration{Name: "web", Port: 80, Meta: map[string]string{"consul.tags": "x"}}, "Meta"},
	} {
		err := cl.Agent().ServiceRegister(reg.reg)
		if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), reg.want) {
			t.Errorf("%s: ServiceRegister: %v; want a 400 naming %s", name, err, reg.want)
		}
	}
	_, _, err := cl.Session().List(nil)
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "/v1/health/service") {
		t.Errorf("Session().List: %v; want a 404 naming the supported endpoints", err)
	}
	_, _, err = cl.Health().Service("web", "", false, &consul.QueryOptions{AllowStale: true, RequireConsistent: true})
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("?stale&consistent: %v; want a 400", err)
	}
}

func TestConsulAPIWithACLs(t *testing.T) {
	c := consulCluster(t, func(cfg *node.Config) { cfg.ACLEnabled = true })
	ctx := t.Context()
	aclc := registryv1.NewACLClient(c.Conns[0])
	boot, err := aclc.Bootstrap(ctx, &registryv1.ACLBootstrapRequest{})
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	mgmt := bearer(ctx, boot.SecretId)
	// A node knows the bootstrap token once it has applied its creation.
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		_, err := aclc.PolicyCreate(mgmt, &registryv1.ACLPolicyCreateRequest{Name: "web", Rules: `service "web" { policy = "write" }`})
		return err
	})
	tok, err := aclc.TokenCreate(mgmt, &registryv1.ACLTokenCreateRequest{Policies: []string{"web"}})
	if err != nil {
		t.Fatalf("TokenCreate: %v", err)
	}

	with, without := consulClient(t, c.Nodes[1], tok.SecretId), consulClient(t, c.Nodes[1], "")
	poll.Eventually(t, 20*time.Second, func(context.Context) error {
		return with.Agent().ServiceRegister(ttlRegistration("web", "web-1", 8081, "10s", ""))
	})
	if err := with.Agent().PassTTL("service:web-1", ""); err != nil {
		t.Errorf("PassTTL with the token: %v", err)
	}
	if e, _, err := with.Health().Service("web", "", true, nil); err != nil || len(e) != 1 {
		t.Errorf("Health().Service with the token: %v, %v", healthIDs(e), err)
	}

	var refused []string
	if err := without.Agent().ServiceRegister(ttlRegistration("web", "web-2", 8082, "10s", "")); err != nil {
		refused = append(refused, "register: "+err.Error())
	}
	if err := without.Agent().PassTTL("service:web-1", ""); err != nil {
		refused = append(refused, "pass: "+err.Error())
	}
	if _, _, err := without.Health().Service("web", "", true, nil); err != nil {
		refused = append(refused, "health: "+err.Error())
	}
	if len(refused) != 3 {
		t.Fatalf("without a token, %d of 3 calls were refused: %q", len(refused), refused)
	}
	for _, r := range refused {
		if !strings.Contains(r, "403") {
			t.Errorf("without a token: %s; want a 403", r)
		}
	}
	// The payments service is not the token's.
	err = with.Agent().ServiceRegister(ttlRegistration("payments", "p-1", 8083, "10s", ""))
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("register payments with the web token: %v; want 403 Permission denied", err)
	}
}

func TestConsulBlockingQueryOutlivesTheServerTimeouts(t *testing.T) {
	c := consulCluster(t, func(cfg *node.Config) {
		cfg.Limits.HTTPWriteTimeout, cfg.Limits.HTTPReadTimeout = 500*time.Millisecond, 500*time.Millisecond
	})
	cl := consulClient(t, c.Nodes[0], "")
	if err := cl.Agent().ServiceRegister(ttlRegistration("web", "web-1", 8081, "30s", "")); err != nil {
		t.Fatalf("ServiceRegister: %v", err)
	}
	_, meta, err := cl.Health().Service("web", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing changes web: the query waits its 2 s (four read and write timeouts)
	// and answers the same index.
	start := time.Now()
	e, meta2, err := cl.Health().Service("web", "", true, &consul.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 2 * time.Second})
	if err != nil || len(e) != 1 {
		t.Fatalf("blocking query past the write timeout: %v, %v", healthIDs(e), err)
	}
	if waited := time.Since(start); waited < 2*time.Second || meta2.LastIndex < meta.LastIndex {
		t.Errorf("the blocking query answered after %v at index %d (asked %d); want the whole wait", waited, meta2.LastIndex, meta.LastIndex)
	}
}

func TestConsulBlockingQueryPastTheRegistrysIndexAnswersAtOnce(t *testing.T) {
	c := consulCluster(t, nil)
	cl := consulClient(t, c.Nodes[0], "")
	if err := cl.Agent().ServiceRegister(ttlRegistration("web", "web-1", 8081, "30s", "")); err != nil {
		t.Fatalf("ServiceRegister: %v", err)
	}
	// An index from before a restore, or from another cluster: a wait of
	// a minute, which the test's 15 s would cut, must not begin.
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	const ahead = 1 << 40
	e, meta, err := cl.Health().Service("web", "", true, (&consul.QueryOptions{WaitIndex: ahead, WaitTime: time.Minute}).WithContext(ctx))
	if err != nil || len(e) != 1 || meta.LastIndex >= ahead {
		t.Errorf("blocking query at index 2^40: %v, index %v, %v; want web-1 at once with a lower index", healthIDs(e), meta, err)
	}
}

func TestConsulUpdateTTLPassingIsABeatAndOtherStatusesAreNot(t *testing.T) {
	c := consulCluster(t, nil)
	leader := c.Leader()
	reg := ttlRegistration("web", "web-1", 8081, "30s", "")
	reg.Check.CheckID = "web-alive"
	if err := consulClient(t, c.Nodes[leader], "").Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("ServiceRegister: %v", err)
	}
	lastBeat := func() uint64 {
		t.Helper()
		got, err := c.Registry(leader).GetService(t.Context(), &registryv1.GetServiceRequest{Service: "web", Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE})
		if err != nil || len(got.Instances) != 1 {
			t.Fatalf("GetService web: %v, %v", got, err)
		}
		return got.Instances[0].LastBeatIndex
	}
	// Through another node, which finds the custom check id in the
	// instance's metadata.
	cl := consulClient(t, c.Nodes[(leader+1)%3], "")
	before := lastBeat()
	for _, status := range []string{"warn", "fail"} {
		if err := cl.Agent().UpdateTTL("web-alive", "", status); err != nil {
			t.Errorf("UpdateTTL(%s): %v", status, err)
		}
	}
	if after := lastBeat(); after != before {
		t.Errorf("UpdateTTL warn and fail moved the last beat from index %d to %d; want no beat", before, after)
	}
	if err := cl.Agent().UpdateTTL("web-alive", "all good", "pass"); err != nil {
		t.Fatalf("UpdateTTL(pass): %v", err)
	}
	if after := lastBeat(); after <= before {
		t.Errorf("UpdateTTL pass left the last beat at index %d (was %d); want a beat", after, before)
	}
	if err := cl.Agent().UpdateTTL("no-such-check", "", "pass"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("UpdateTTL of an unknown check: %v; want a 404", err)
	}
}
