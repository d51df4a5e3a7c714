package consulapi_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery"
	consulsd "github.com/prometheus/prometheus/discovery/consul"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"go.yaml.in/yaml/v2"

	"github.com/regcenter/registry/internal/poll"
)

// sdTargets keeps the latest target groups a Prometheus discoverer sent,
// by source (one group per Consul service).
type sdTargets struct {
	mu     sync.Mutex
	groups map[string]*targetgroup.Group
}

// instances returns the discovered targets' address and labels by
// Consul service id.
func (s *sdTargets) instances() map[string]model.LabelSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]model.LabelSet{}
	for _, g := range s.groups {
		for _, tg := range g.Targets {
			ls := tg.Merge(g.Labels)
			out[string(ls["__meta_consul_service_id"])] = ls
		}
	}
	return out
}

// TestPrometheusConsulSDCodeDiscoversAndDropsExpired runs Prometheus's own
// Consul service discovery (github.com/prometheus/prometheus/discovery/consul,
// the code behind consul_sd_configs, configured from the YAML block an
// operator writes) against one node's --consul-addr, in the test process:
// it finds the registered instances with their address, metadata, tags and
// datacenter, and drops the one whose TTL passed without a pass. Unlike
// TestPrometheusConsulSDDiscoversAndDropsExpired it needs no Prometheus
// binary (Debian's is built without Consul discovery), so it always runs.
func TestPrometheusConsulSDCodeDiscoversAndDropsExpired(t *testing.T) {
	c := consulCluster(t, nil)
	nd := c.Nodes[(c.Leader()+1)%3]
	cl := consulClient(t, nd, "")
	if err := cl.Agent().ServiceRegister(ttlRegistration("web", "web-1", 18081, "3s", "")); err != nil {
		t.Fatalf("ServiceRegister web-1: %v", err)
	}
	passUntil(t, cl, "service:web-1", 500*time.Millisecond)

	// The consul_sd_configs entry as in prometheus.yml; no datacenter, so
	// the discoverer asks /v1/agent/self for it.
	var sd consulsd.SDConfig
	block := fmt.Sprintf("server: %q\nrefresh_interval: 1s\n", nd.ConsulAddr())
	if err := yaml.UnmarshalStrict([]byte(block), &sd); err != nil {
		t.Fatalf("consul_sd_configs %q: %v", block, err)
	}
	reg := prometheus.NewRegistry()
	refresh := discovery.NewRefreshMetrics(reg)
	metrics := sd.NewDiscovererMetrics(reg, refresh)
	if err := metrics.Register(); err != nil {
		t.Fatal(err)
	}
	defer metrics.Unregister()
	d, err := sd.NewDiscoverer(discovery.DiscovererOptions{Logger: slog.New(slog.DiscardHandler), Metrics: metrics})
	if err != nil {
		t.Fatalf("Prometheus's consul discoverer: %v", err)
	}
	found := &sdTargets{groups: map[string]*targetgroup.Group{}}
	ctx, cancel := context.WithCancel(t.Context())
	ch := make(chan []*targetgroup.Group)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.Run(ctx, ch) }()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case groups := <-ch:
				found.mu.Lock()
				for _, g := range groups {
					found.groups[g.Source] = g
				}
				found.mu.Unlock()
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	ids := func() []string {
		var out []string
		for id := range found.instances() {
			out = append(out, id)
		}
		slices.Sort(out)
		return out
	}
	// web-2 is passed until the discoverer has found it, then no more:
	// TTL 2s, removed when it passes.
	if err := cl.Agent().ServiceRegister(ttlRegistration("web", "web-2", 18082, "2s", "")); err != nil {
		t.Fatalf("ServiceRegister web-2: %v", err)
	}
	stopWeb2 := passUntil(t, cl, "service:web-2", 300*time.Millisecond)
	poll.Eventually(t, 30*time.Second, func(context.Context) error {
		if got := ids(); !slices.Equal(got, []string{"web-1", "web-2"}) {
			return fmt.Errorf("consul targets %v, want web-1 and web-2", got)
		}
		return nil
	})
	web1 := found.instances()["web-1"]
	for name, want := range map[model.LabelName]string{
		"__address__":                            "127.0.0.1:18081",
		"__meta_consul_service":                  "web",
		"__meta_consul_service_metadata_version": "2.1",
		"__meta_consul_tags":                     ",blue,v2,",
		"__meta_consul_dc":                       "dc1",
	} {
		if got := string(web1[name]); got != want {
			t.Errorf("web-1 as Prometheus discovered it: %s = %q, want %q (all: %v)", name, got, want, web1)
		}
	}
	stopWeb2()
	poll.Eventually(t, 30*time.Second, func(context.Context) error {
		if got := ids(); !slices.Equal(got, []string{"web-1"}) {
			return fmt.Errorf("consul targets %v, want web-1 only once web-2 expired", got)
		}
		return nil
	})
}
