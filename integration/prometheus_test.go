package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
)

// prometheusPort is where the test's Prometheus listens, on the cluster's
// own loopback IP: a fixed port below the ephemeral range.
const prometheusPort = 17090

// prometheusAPI is a client of a Prometheus server's HTTP API.
type prometheusAPI struct{ base string }

// get calls path and decodes the data of a success answer into out.
func (p prometheusAPI) get(ctx context.Context, path string, query url.Values, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path+"?"+query.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, body.Status, body.Error)
	}
	return json.Unmarshal(body.Data, out)
}

type target struct {
	Labels           map[string]string `json:"labels"`
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	Health           string            `json:"health"`
	LastError        string            `json:"lastError"`
}

// targets returns the active targets of job.
func (p prometheusAPI) targets(ctx context.Context, job string) ([]target, error) {
	var data struct {
		ActiveTargets []target `json:"activeTargets"`
	}
	if err := p.get(ctx, "/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
		return nil, err
	}
	var out []target
	for _, t := range data.ActiveTargets {
		if t.Labels["job"] == job {
			out = append(out, t)
		}
	}
	return out, nil
}

// startPrometheus runs Prometheus on the cluster's loopback IP, scraping
// the nodes and the services their SD endpoint lists every second, with
// the alert rules of deploy/prometheus loaded. It skips the test where
// Prometheus is not installed.
func startPrometheus(t *testing.T, c *harness.Cluster) prometheusAPI {
	t.Helper()
	binary, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed (Debian: apt-get install prometheus; .ci/run installs it): skipping the scrape and service discovery test")
	}
	rules, err := filepath.Abs("../deploy/prometheus/registry-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	listen := net.JoinHostPort(c.IP(), fmt.Sprint(prometheusPort))
	if l, err := net.Listen("tcp", listen); err != nil {
		t.Fatalf("Prometheus's address %s is taken: %v", listen, err)
	} else {
		l.Close()
	}
	var nodes, sd []string
	for _, n := range c.Nodes() {
		nodes = append(nodes, fmt.Sprintf("%q", n.HTTPAddr()))
		sd = append(sd, fmt.Sprintf("      - url: http://%s/v1/sd/prometheus\n        refresh_interval: 1s", n.HTTPAddr()))
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: registry
    static_configs:
      - targets: [%s]
  - job_name: services
    http_sd_configs:
%s
    relabel_configs:
      - source_labels: [__meta_registry_service]
        target_label: service
      - source_labels: [__meta_registry_instance_id]
        target_label: instance_id
`, rules, strings.Join(nodes, ", "), strings.Join(sd, "\n"))
	proc, err := harness.StartPrometheus(t, binary, config, listen)
	if err != nil {
		t.Fatal(err)
	}
	api := prometheusAPI{base: "http://" + listen}
	poll.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		if proc.Exited() {
			t.Fatalf("prometheus exited:\n%s", proc.LogTail(20))
		}
		resp, err := http.Get(api.base + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/-/ready: %s", resp.Status)
		}
		return nil
	})
	return api
}

// metricsServer serves a trivial /metrics on 127.0.0.1, for Prometheus to
// scrape as a registered instance, and returns its address.
func metricsServer(t *testing.T, name string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# HELP demo_up A registered demo instance.\n# TYPE demo_up gauge\ndemo_up{name=%q} 1\n", name)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// beatUntil beats for instance every interval until ctx ends.
func beatUntil(ctx context.Context, node *harness.Node, ref *registryv1.InstanceRef, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		node.RegistryClient().Beat(callCtx, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{ref}})
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// byInstanceID lists "instance_id health" of targets, sorted.
func byInstanceID(targets []target) []string {
	var out []string
	for _, t := range targets {
		out = append(out, t.Labels["instance_id"]+" "+t.Health)
	}
	slices.Sort(out)
	return out
}

func TestPrometheusScrapesTheNodesAndDiscoversTheInstances(t *testing.T) {
	c := harness.Start(t, harness.Options{})
	leader := waitLeader(t, c)
	api := startPrometheus(t, c)
	ctx := t.Context()

	// The three nodes are scraped.
	poll.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		targets, err := api.targets(ctx, "registry")
		if err != nil {
			return err
		}
		up := 0
		for _, t := range targets {
			if t.Health == "up" {
				up++
			}
		}
		if up != 3 {
			return fmt.Errorf("%d of 3 node targets up: %+v", up, targets)
		}
		return nil
	})

	// Two instances register and beat through a follower, as clients spread
	// over the nodes do: the follower forwards them to the leader (the
	// dashboard's "Forwarded to the leader" panel needs that traffic).
	follower := c.Followers()[0]
	instances := map[string]*registryv1.Instance{}
	stop := map[string]context.CancelFunc{}
	for _, id := range []string{"keeper", "goner"} {
		in := &registryv1.Instance{Service: "demo", Id: id, Address: metricsServer(t, id), Incarnation: 1,
			BeatInterval: durationpb.New(200 * time.Millisecond), SuspectAfter: durationpb.New(400 * time.Millisecond),
			Ttl: durationpb.New(600 * time.Millisecond), Metadata: map[string]string{"team": "core"}}
		if _, err := register(t, leader, in); err != nil {
			t.Fatal(err)
		}
		instances[id] = in
		beatCtx, cancel := context.WithCancel(ctx)
		stop[id] = cancel
		done := make(chan struct{})
		go func() {
			defer close(done)
			beatUntil(beatCtx, follower, &registryv1.InstanceRef{Service: "demo", Id: id, Incarnation: 1}, 100*time.Millisecond)
		}()
		t.Cleanup(func() { cancel(); <-done })
	}
	var discovered []target
	poll.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		targets, err := api.targets(ctx, "services")
		if err != nil {
			return err
		}
		if got, want := byInstanceID(targets), []string{"goner up", "keeper up"}; !slices.Equal(got, want) {
			return fmt.Errorf("service targets %v, want %v", got, want)
		}
		discovered = targets
		return nil
	})
	for _, tg := range discovered {
		in := instances[tg.Labels["instance_id"]]
		if tg.Labels["instance"] != in.Address || tg.Labels["service"] != "demo" ||
			tg.DiscoveredLabels["__meta_registry_metadata_team"] != "core" || tg.DiscoveredLabels["__meta_registry_state"] != "healthy" {
			t.Errorf("target %+v does not describe %s/%s at %s", tg, in.Service, in.Id, in.Address)
		}
	}

	// The goner stops beating: it expires and leaves the target list.
	stop["goner"]()
	poll.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		targets, err := api.targets(ctx, "services")
		if err != nil {
			return err
		}
		if got, want := byInstanceID(targets), []string{"keeper up"}; !slices.Equal(got, want) {
			return fmt.Errorf("service targets %v, want %v", got, want)
		}
		return nil
	})
	// An election may fall in between (200 ms Raft timeouts on a loaded
	// machine): the read is retried until a leader answers it.
	var held []string
	poll.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		resp, err := getService(ctx, leader, "demo", registryv1.Consistency_CONSISTENCY_DEFAULT)
		held = ids(resp.GetInstances())
		return err
	})
	if !slices.Equal(held, []string{"keeper"}) {
		t.Errorf("demo holds %v; want the goner expired, not just hidden", held)
	}

	checkRulesAndDashboard(t, api)
}

// checkRulesAndDashboard checks, against the live Prometheus, that every
// alert rule of deploy/prometheus evaluates without error and none fires on
// this healthy cluster, and that every query of the Grafana dashboard runs
// and names metrics the cluster exports.
func checkRulesAndDashboard(t *testing.T, api prometheusAPI) {
	t.Helper()
	want := ruleCount(t, "../deploy/prometheus/registry-alerts.yml")
	poll.Eventually(t, 30*time.Second, func(ctx context.Context) error {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
					State     string `json:"state"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := api.get(ctx, "/api/v1/rules", nil, &data); err != nil {
			return err
		}
		n := 0
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					return fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
				}
				if r.State == "firing" {
					t.Errorf("alert %s fires on a healthy cluster", r.Name)
				}
			}
		}
		if n != want {
			return fmt.Errorf("%d rules loaded, want the %d of the rules file", n, want)
		}
		return nil
	})

	data, err := os.ReadFile("../deploy/grafana/registry-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var names []string
	if err := api.get(t.Context(), "/api/v1/label/__name__/values", nil, &names); err != nil {
		t.Fatal(err)
	}
	metricName := regexp.MustCompile(`\b(registry|raft|grpc_server)_[a-z_]+\b`) // grpc_method and grpc_code are labels
	// Absent until the first snapshot (8192 entries or a restore).
	absentAtFirst := map[string]bool{"registry_raft_snapshot_age_seconds": true}
	queries := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries++
			expr := strings.NewReplacer("$job", "registry", "$__rate_interval", "1m").Replace(tg.Expr)
			var result any
			if err := api.get(t.Context(), "/api/v1/query", url.Values{"query": {expr}}, &result); err != nil {
				t.Errorf("panel %q: %s: %v", p.Title, expr, err)
			}
			for _, name := range metricName.FindAllString(expr, -1) {
				base := strings.TrimSuffix(name, "_bucket")
				if !slices.Contains(names, name) && !slices.Contains(names, base+"_count") && !absentAtFirst[name] {
					t.Errorf("panel %q uses %s, which no node exports", p.Title, name)
				}
			}
		}
	}
	if queries < 20 {
		t.Errorf("the dashboard has %d queries; is it the right file?", queries)
	}
}

// ruleCount counts the alerting and recording rules of a Prometheus rules
// file: the entries that begin with "- alert:" or "- record:".
func ruleCount(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "- alert:") || strings.HasPrefix(line, "- record:") {
			n++
		}
	}
	if n == 0 {
		t.Fatalf("%s holds no rules", path)
	}
	return n
}
