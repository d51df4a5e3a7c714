package consulapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// consulSDPrometheusPort is where the test's Prometheus listens: a fixed
// port below the ephemeral range, not the one integration's Prometheus
// test uses (17090), so that both may run at once.
const consulSDPrometheusPort = 17091

// consulSDTarget is one active target of Prometheus's /api/v1/targets.
type consulSDTarget struct {
	Labels           map[string]string `json:"labels"`
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
}

// TestPrometheusConsulSDDiscoversAndDropsExpired runs Debian's Prometheus
// with a consul_sd_configs block pointed at one node's --consul-addr: it
// finds the registered instances with their metadata and tags, and drops
// the one whose TTL passed without a pass.
func TestPrometheusConsulSDDiscoversAndDropsExpired(t *testing.T) {
	binary := os.Getenv("REGISTRY_TEST_PROMETHEUS")
	if binary == "" {
		var err error
		if binary, err = exec.LookPath("prometheus"); err != nil {
			t.Skip("prometheus is not installed (Debian: apt-get install prometheus; .ci/run installs it): skipping the consul_sd_configs test")
		}
	}
	c := consulCluster(t, nil)
	nd := c.Nodes[(c.Leader()+1)%3]
	cl := consulClient(t, nd, "")
	if err := cl.Agent().ServiceRegister(ttlRegistration("web", "web-1", 18081, "3s", "")); err != nil {
		t.Fatalf("ServiceRegister web-1: %v", err)
	}
	passUntil(t, cl, "service:web-1", 500*time.Millisecond)

	listen := net.JoinHostPort("127.0.0.1", fmt.Sprint(consulSDPrometheusPort))
	if l, err := net.Listen("tcp", listen); err != nil {
		t.Fatalf("Prometheus's address %s is taken: %v", listen, err)
	} else {
		l.Close()
	}
	// No datacenter: Prometheus asks /v1/agent/self for it.
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: consul
    consul_sd_configs:
      - server: %q
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__meta_consul_service_id]
        target_label: instance_id
      - source_labels: [__meta_consul_service_metadata_version]
        target_label: version
`, nd.ConsulAddr())
	proc, err := harness.StartPrometheus(t, binary, config, listen)
	if err != nil {
		t.Fatal(err)
	}

	targets := func(ctx context.Context) ([]consulSDTarget, error) {
		if proc.Exited() {
			if tail := proc.LogTail(20); strings.Contains(tail, "consul_sd_configs not found") {
				t.Skipf("%s is built without Consul service discovery (Debian's 2.42 package disables it: \"Disable Consul SD until its "+
					"Debian package is back in shape\"); set REGISTRY_TEST_PROMETHEUS to a Prometheus that has it:\n%s", binary, tail)
			}
			t.Fatalf("prometheus exited:\n%s", proc.LogTail(20))
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listen+"/api/v1/targets?state=active", nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var body struct {
			Data struct {
				ActiveTargets []consulSDTarget `json:"activeTargets"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return nil, err
		}
		var out []consulSDTarget
		for _, tg := range body.Data.ActiveTargets {
			if tg.Labels["job"] == "consul" {
				out = append(out, tg)
			}
		}
		return out, nil
	}
	ids := func(ts []consulSDTarget) []string {
		var out []string
		for _, tg := range ts {
			out = append(out, tg.Labels["instance_id"])
		}
		slices.Sort(out)
		return out
	}

	// web-2 is passed until Prometheus has found it, then no more: TTL
	// 2s, removed when it passes.
	if err := cl.Agent().ServiceRegister(ttlRegistration("web", "web-2", 18082, "2s", "")); err != nil {
		t.Fatalf("ServiceRegister web-2: %v", err)
	}
	stopWeb2 := passUntil(t, cl, "service:web-2", 300*time.Millisecond)
	poll.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		ts, err := targets(ctx)
		if err != nil {
			return err
		}
		if got := ids(ts); !slices.Equal(got, []string{"web-1", "web-2"}) {
			return fmt.Errorf("consul targets %v, want web-1 and web-2", got)
		}
		for _, tg := range ts {
			if tg.Labels["instance_id"] != "web-1" {
				continue
			}
			d := tg.DiscoveredLabels
			if d["__address__"] != "127.0.0.1:18081" || d["__meta_consul_service"] != "web" || tg.Labels["version"] != "2.1" ||
				d["__meta_consul_tags"] != ",blue,v2," || d["__meta_consul_dc"] != "dc1" {
				t.Fatalf("web-1 as Prometheus discovered it: labels %v, discovered %v", tg.Labels, d)
			}
		}
		return nil
	})
	stopWeb2()
	poll.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		ts, err := targets(ctx)
		if err != nil {
			return err
		}
		if got := ids(ts); !slices.Equal(got, []string{"web-1"}) {
			return fmt.Errorf("consul targets %v, want web-1 only once web-2 expired", got)
		}
		return nil
	})
}
