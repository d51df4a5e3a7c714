package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/regcenter/registry/internal/poll"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
)

// newHTTPCluster is a three-node in-process cluster with HTTP on, and the
// positions of its leader and of a follower.
func newHTTPCluster(t *testing.T) (c *nodetest.Cluster, leader, follower int) {
	t.Helper()
	c = nodetest.New(t, 3, func(cfg *node.Config) { cfg.HTTPAddr = "127.0.0.1:0" })
	leader = c.Leader()
	return c, leader, (leader + 1) % 3
}

// call sends an HTTP request, with Content-Type application/json when it
// has a body, and returns the status and the body.
func call(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	contentType := ""
	if body != "" {
		contentType = "application/json"
	}
	resp, data := send(t, method, url, contentType, body)
	return resp.StatusCode, data
}

// send sends an HTTP request with a Content-Type (if not empty) and
// returns the response, its body read.
func send(t *testing.T, method, url, contentType, body string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(data)
}

func TestTheHTTPAPIRegistersBeatsReadsAndDeregistersThroughAFollower(t *testing.T) {
	c, _, follower := newHTTPCluster(t)
	base := "http://" + c.Nodes[follower].HTTPAddr()

	code, body := call(t, "PUT", base+"/v1/services/orders/instances/orders-1",
		`{"address": "127.0.0.5:8080", "metadata": {"zone": "a"}, "beat_interval": "1s", "ttl": "30s"}`)
	if code != http.StatusOK {
		t.Fatalf("register: %d %s", code, body)
	}
	var reg struct {
		Instance map[string]any `json:"instance"`
		Index    string         `json:"index"`
		BeatKey  []byte         `json:"beat_key"` // base64 in JSON
	}
	if err := json.Unmarshal([]byte(body), &reg); err != nil {
		t.Fatal(err)
	}
	if reg.Instance["service"] != "orders" || reg.Instance["id"] != "orders-1" || reg.Instance["state"] != "INSTANCE_STATE_HEALTHY" ||
		reg.Instance["suspect_after"] != "15s" || reg.Index == "" {
		t.Errorf("register answered %s; want the stored instance with proto field names and defaults filled in", body)
	}
	if len(reg.BeatKey) != 32 {
		t.Errorf("register answered a beat_key of %d bytes, want 32 (the UDP beat key)", len(reg.BeatKey))
	}

	code, body = call(t, "POST", base+"/v1/beat", `{"beats": [{"service": "orders", "id": "orders-1", "incarnation": "1"}, {"service": "orders", "id": "ghost"}]}`)
	want := `{"index": "*", "recommended_interval": null, "rejected": [{"current_incarnation": "0", "instance": {"id": "ghost", "incarnation": "1", "service": "orders"}, "reason": "BEAT_REJECT_REASON_UNKNOWN", "udp_seq": "0"}], "retry": null, "seq": "0"}`
	if code != http.StatusOK || !sameJSON(t, want, body) {
		t.Errorf("beat: %d %s; want 200 with ghost (only) rejected as unknown", code, body)
	}
	code, body = call(t, "GET", base+"/v1/services/orders?consistency=CONSISTENCY_LINEARIZABLE", "")
	if code != http.StatusOK || !strings.Contains(body, "127.0.0.5:8080") || !sameJSON(t, `{"instances": "*", "index": "*", "known_leader": true, "next_page_token": ""}`, body) {
		t.Errorf("get service: %d %s", code, body)
	}
	code, body = call(t, "GET", base+"/v1/services", "")
	if code != http.StatusOK || !sameJSON(t, `{"services": [{"service": "orders", "healthy": 1, "suspect": 0}], "index": "*", "known_leader": true}`, body) {
		t.Errorf("list services: %d %s", code, body)
	}
	code, body = call(t, "DELETE", base+"/v1/services/orders/instances/orders-1?incarnation=1", "")
	if code != http.StatusOK {
		t.Errorf("deregister: %d %s", code, body)
	}
	code, body = call(t, "DELETE", base+"/v1/services/orders/instances/orders-1", "")
	if code != http.StatusNotFound || !sameJSON(t, `{"code": 5, "message": "instance not found: orders/orders-1", "details": []}`, body) {
		t.Errorf("deregister again: %d %s; want 404 with the gRPC status", code, body)
	}
}

// sameJSON reports whether got holds the JSON want, where "*" in want
// stands for any value.
func sameJSON(t *testing.T, want, got string) bool {
	t.Helper()
	var w, g any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want: %v", err)
	}
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		return false
	}
	return matchJSON(w, g)
}

func matchJSON(want, got any) bool {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for k, v := range w {
			if gv, ok := g[k]; !ok || !matchJSON(v, gv) {
				return false
			}
		}
		return true
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return false
		}
		for i := range w {
			if !matchJSON(w[i], g[i]) {
				return false
			}
		}
		return true
	case string:
		return w == "*" || w == got
	default:
		return want == got
	}
}

func TestTheHTTPAPIRefusesBadInputNamingTheField(t *testing.T) {
	c, leader, follower := newHTTPCluster(t)
	base := "http://" + c.Nodes[follower].HTTPAddr()
	in := &registryv1.Instance{Service: "orders", Id: "a", Address: "127.0.0.1:80", Incarnation: 5}
	if _, err := c.Registry(leader).Register(t.Context(), &registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, body string
		code                     int
		says                     string
	}{
		{"no address", "PUT", "/v1/services/orders/instances/b", `{}`, 400, "instance.address"},
		{"ttl below three intervals", "PUT", "/v1/services/orders/instances/b",
			`{"address": "h:1", "beat_interval": "1s", "suspect_after": "2s", "ttl": "2s"}`, 400, "instance.ttl"},
		{"bad service name", "PUT", "/v1/services/or%20ders/instances/b", `{"address": "h:1"}`, 400, "instance.service"},
		{"unknown field", "PUT", "/v1/services/orders/instances/b", `{"address": "h:1", "tll": "5s"}`, 400, "tll"},
		{"not JSON", "PUT", "/v1/services/orders/instances/b", `address=h:1`, 400, "invalid"},
		{"lower incarnation", "PUT", "/v1/services/orders/instances/a", `{"address": "h:1", "incarnation": "4"}`, 400, "incarnation"},
		{"empty beat", "POST", "/v1/beat", `{"beats": []}`, 400, "beats"},
		{"unknown consistency", "GET", "/v1/services/orders?consistency=CONSISTENCY_SOMETIMES", "", 400, "consistency"},
		{"unknown path", "GET", "/v1/nothing", "", 404, "Not Found"},
		{"body over 1 MiB", "POST", "/v1/beat", `{"beats": [` + strings.Repeat(`{"service":"s","id":"i"},`, 50_000) + `{}]}`, 400, "too large"},
		{"bad include_suspect", "GET", "/v1/sd/prometheus?include_suspect=maybe", "", 400, "include_suspect"},
		{"bad service filter", "GET", "/v1/sd/prometheus?service=a,,b", "", 400, "service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(t, tt.method, base+tt.path, tt.body)
			if code != tt.code || !strings.Contains(body, tt.says) {
				t.Errorf("%d %s; want %d naming %q", code, body, tt.code, tt.says)
			}
		})
	}
}

func TestAWrongMethodIs405WithTheAllowedMethods(t *testing.T) {
	c, _, follower := newHTTPCluster(t)
	base := "http://" + c.Nodes[follower].HTTPAddr()
	tests := []struct {
		method, path, contentType string
		allow                     string
	}{
		{"PATCH", "/v1/services", "", "GET"},
		{"POST", "/v1/services/orders", "application/json", "GET"},
		// Not served as a GET either (grpc-gateway's path length fallback).
		{"POST", "/v1/services/orders", "application/x-www-form-urlencoded", "GET"},
		{"POST", "/v1/services/orders/instances/a", "application/json", "DELETE, PUT"},
		{"GET", "/v1/beat", "", "POST"},
		{"DELETE", "/v1/services/orders/watch", "", "GET"},
		{"POST", "/v1/cluster/status", "", "GET"},
		{"POST", "/metrics", "", "GET, HEAD"},
		{"DELETE", "/healthz", "", "GET, HEAD"},
		{"PUT", "/readyz", "", "GET, HEAD"},
		{"POST", "/v1/sd/prometheus", "", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" "+tt.contentType, func(t *testing.T) {
			resp, body := send(t, tt.method, base+tt.path, tt.contentType, "")
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tt.allow {
				t.Errorf("%d, Allow %q, %s; want 405, Allow %q", resp.StatusCode, resp.Header.Get("Allow"), body, tt.allow)
			}
		})
	}
	if code, body := call(t, "PATCH", base+"/v1/nothing", ""); code != http.StatusNotFound {
		t.Errorf("PATCH of an unknown path: %d %s; want 404", code, body)
	}
}

func TestTheHTTPAPIReadsGoDurations(t *testing.T) {
	c, _, follower := newHTTPCluster(t)
	base := "http://" + c.Nodes[follower].HTTPAddr()
	code, body := call(t, "PUT", base+"/v1/services/orders/instances/a",
		`{"address": "127.0.0.1:8080", "beat_interval": "1m30s", "suspect_after": "3m", "ttl": "1h"}`)
	if code != http.StatusOK || !sameJSON(t, `{"instance": {"service": "orders", "id": "a", "address": "127.0.0.1:8080", "metadata": {},
		"incarnation": "*", "beat_interval": "90s", "suspect_after": "180s", "ttl": "3600s", "state": "INSTANCE_STATE_HEALTHY",
		"create_index": "*", "modify_index": "*", "last_beat_index": "*", "registered_at": "*", "last_beat_at": "*"}, "index": "*", "beat_key": "*"}`, body) {
		t.Errorf("register with Go durations: %d %s; want 200 with them in seconds", code, body)
	}
	code, body = call(t, "PUT", base+"/v1/services/orders/instances/b", `{"address": "127.0.0.1:8081", "ttl": "an hour"}`)
	if want := `field ttl: \"an hour\" is not a duration`; code != http.StatusBadRequest || !strings.Contains(body, want) {
		t.Errorf("register with a bad duration: %d %s; want 400 with %s", code, body, want)
	}
}

func TestTheHTTPWatchStreamsAResetThenEvents(t *testing.T) {
	c, leader, follower := newHTTPCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+c.Nodes[follower].HTTPAddr()+"/v1/services/orders/watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	next := func() map[string]any {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("watch stream ended: %v", lines.Err())
		}
		var msg struct {
			Result map[string]any `json:"result"`
		}
		if err := json.Unmarshal(lines.Bytes(), &msg); err != nil || msg.Result == nil {
			t.Fatalf("watch line %q: %v", lines.Text(), err)
		}
		return msg.Result
	}
	if first := next(); first["is_reset"] != true {
		t.Fatalf("first message %v, want a reset", first)
	}
	in := &registryv1.Instance{Service: "orders", Id: "a", Address: "127.0.0.1:80"}
	if _, err := c.Registry(leader).Register(ctx, &registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	events, _ := next()["events"].([]any)
	if len(events) != 1 || events[0].(map[string]any)["type"] != "EVENT_TYPE_REGISTERED" {
		t.Errorf("events %v, want the registration", events)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	c, _, _ := newHTTPCluster(t)
	for _, nd := range c.Nodes {
		base := "http://" + nd.HTTPAddr()
		if code, body := call(t, "GET", base+"/healthz", ""); code != http.StatusOK {
			t.Errorf("%s /healthz: %d %s", nd.ID(), code, body)
		}
		poll.Eventually(t, 10*time.Second, func(context.Context) error {
			if code, body := call(t, "GET", base+"/readyz", ""); code != http.StatusOK {
				return fmt.Errorf("%s /readyz: %d %s", nd.ID(), code, body)
			}
			return nil
		})
	}
	// A stopping node is not ready: an orchestrator stops sending it calls.
	addr := c.Nodes[2].HTTPAddr()
	if err := c.Shutdown(2); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + addr + "/readyz"); err == nil {
		t.Errorf("%s still serves /readyz after shutdown", addr)
	}
}

func TestPrometheusSDListsTheInstancesOfThisReplica(t *testing.T) {
	c, leader, follower := newHTTPCluster(t)
	reg := c.Registry(leader)
	for _, in := range []*registryv1.Instance{
		{Service: "orders", Id: "o1", Address: "127.0.0.1:80", Metadata: map[string]string{"zone": "eu-1a"}},
		{Service: "pay", Id: "p1", Address: "127.0.0.2:80"},
	} {
		if _, err := reg.Register(t.Context(), &registryv1.RegisterRequest{Instance: in}); err != nil {
			t.Fatal(err)
		}
	}
	url := "http://" + c.Nodes[follower].HTTPAddr() + "/v1/sd/prometheus"
	var groups []struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		if code, body := call(t, "GET", url, ""); code != http.StatusOK || strings.Count(body, `"targets"`) != 2 {
			return fmt.Errorf("all services: %d %s; want two groups", code, body)
		}
		code, body := call(t, "GET", url+"?service=orders", "")
		if code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		groups = nil
		if err := json.Unmarshal([]byte(body), &groups); err != nil {
			return err
		}
		if len(groups) != 1 {
			return fmt.Errorf("%d target groups for orders, want 1: %s", len(groups), body)
		}
		return nil
	})
	want := map[string]string{
		"__meta_registry_service":       "orders",
		"__meta_registry_instance_id":   "o1",
		"__meta_registry_state":         "healthy",
		"__meta_registry_metadata_zone": "eu-1a",
	}
	if !slices.Equal(groups[0].Targets, []string{"127.0.0.1:80"}) || fmt.Sprint(groups[0].Labels) != fmt.Sprint(want) {
		t.Errorf("target group %+v, want 127.0.0.1:80 with %v", groups[0], want)
	}
}

// scrape returns a node's /metrics.
func scrape(t *testing.T, nd *node.Node) string {
	t.Helper()
	code, body := call(t, "GET", "http://"+nd.HTTPAddr()+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("%s /metrics: %d", nd.ID(), code)
	}
	return body
}

func TestMetricsAreLintCleanAndCoverTheRegistry(t *testing.T) {
	c, leader, follower := newHTTPCluster(t)
	reg := c.Registry(follower)
	ctx := t.Context()
	in := &registryv1.Instance{Service: "orders", Id: "o1", Address: "127.0.0.1:80", BeatInterval: durationpb.New(time.Second)}
	if _, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Beat(ctx, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "orders", Id: "o1", Incarnation: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Deregister(ctx, &registryv1.DeregisterRequest{Service: "orders", Id: "o1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}

	want := map[int][]string{
		leader: {
			`registry_instances{service="orders",state="healthy"} 1`,
			`registry_services 1`,
			`registry_beats_applied_total 1`,
			`registry_beat_batch_size_beats_count 1`,
			`registry_checker_running 1`,
			`registry_expiry_guard_active 0`,
			`registry_raft_role{role="leader"} 1`,
			`registry_clock_skew_seconds 0`,
			`registry_deregistrations_total{reason="client"} 1`,
			`registry_raft_proposed_entries_total{type="Register"} 2`,
			`registry_raft_proposed_entries_total{type="Deregister"} 1`,
			`registry_raft_proposed_entries_total{type="BeatBatch"} 1`,
			`registry_raft_proposed_bytes_total{type="BeatBatch"}`,
			// The follower forwards each write batch (here one write each) in a ForwardWrites call.
			`grpc_server_handled_total{grpc_code="OK",grpc_method="ForwardWrites",grpc_service="registry.v1.Registry",grpc_type="unary"} 3`,
			`raft_apply_total`,
			`raft_commit_time_seconds`,
			`go_goroutines`,
			`process_cpu_seconds_total`,
		},
		follower: {
			`registry_beats_received_total 1`,
			`registry_beat_commit_latency_seconds_count 1`,
			`registry_forwarded_requests_total{method="/registry.v1.Registry/ForwardWrites"} 3`,
			`registry_forwarded_requests_total{method="/registry.v1.Registry/Beat"} 1`,
			`registry_raft_role{role="follower"} 1`,
			`registry_raft_has_leader 1`,
			fmt.Sprintf(`registry_raft_leader_info{leader_id="%s"} 1`, c.Nodes[leader].ID()),
			`registry_raft_last_contact_seconds`,
			`registry_failover_fence_remaining_seconds`,
			`registry_raft_applied_index`,
			`registry_raft_commit_index`,
			`registry_raft_last_log_index`,
			`registry_raft_voter 1`,
			`registry_raft_term`,
			`registry_raft_last_snapshot_index`,
			`registry_suspects_total 0`,
			`registry_reacquisitions_total 0`,
			`registry_watchers 0`,
			`registry_watch_events_sent_total 0`,
			`registry_watch_resets_total 0`,
		},
	}
	for i, lines := range want {
		nd := c.Nodes[i]
		poll.Eventually(t, 5*time.Second, func(context.Context) error {
			body := scrape(t, nd)
			for _, line := range lines {
				if !strings.Contains(body, line) {
					return fmt.Errorf("%s /metrics has no %q", nd.ID(), line)
				}
			}
			return nil
		})
		body := scrape(t, nd)
		problems, err := promlint.New(strings.NewReader(body)).Lint()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("%s /metrics: %s: %s", nd.ID(), p.Metric, p.Text)
		}
		promtoolCheckMetrics(t, body)
		if strings.Contains(body, `method=""`) {
			t.Errorf("%s: a forwarded call without its method:\n%s", nd.ID(), grepLines(body, `method=""`))
		}
		if strings.Contains(body, `service="orders"`) && strings.Count(body, `service="orders"`) != 2 {
			t.Errorf("%s: the service label appears outside registry_instances:\n%s", nd.ID(), grepLines(body, `service="orders"`))
		}
	}
}

// promtoolCheckMetrics runs `promtool check metrics` on a scrape, when
// promtool is installed (.ci/run installs it).
func promtoolCheckMetrics(t *testing.T, body string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool is not installed: skipping `promtool check metrics` (the Go linter ran)")
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func grepLines(body, s string) string {
	var out []string
	for line := range strings.Lines(body) {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

func TestPprofIsServedOnlyWhenEnabled(t *testing.T) {
	off := nodetest.New(t, 1, func(cfg *node.Config) { cfg.HTTPAddr = "127.0.0.1:0" })
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
		if code, body := call(t, "GET", "http://"+off.Nodes[0].HTTPAddr()+path, ""); code != http.StatusNotFound {
			t.Errorf("pprof off: GET %s answered %d %.80q; want 404", path, code, body)
		}
	}

	on := nodetest.New(t, 1, func(cfg *node.Config) { cfg.HTTPAddr = "127.0.0.1:0"; cfg.EnablePprof = true })
	base := "http://" + on.Nodes[0].HTTPAddr()
	if code, body := call(t, "GET", base+"/debug/pprof/", ""); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof on: GET /debug/pprof/ answered %d %.200q; want 200 with the profile index", code, body)
	}
	if code, body := call(t, "GET", base+"/debug/pprof/heap?debug=1", ""); code != http.StatusOK || !strings.Contains(body, "heap profile") {
		t.Errorf("pprof on: GET /debug/pprof/heap?debug=1 answered %d %.200q; want 200 with a heap profile", code, body)
	}
	// A CPU profile is gzipped protobuf: it starts with the gzip magic.
	if code, body := call(t, "GET", base+"/debug/pprof/profile?seconds=1", ""); code != http.StatusOK || !strings.HasPrefix(body, "\x1f\x8b") {
		t.Errorf("pprof on: GET /debug/pprof/profile?seconds=1 answered %d %.80q; want 200 with a gzipped profile", code, body)
	}
}
