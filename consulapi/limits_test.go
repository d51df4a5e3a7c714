package consulapi_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/regcenter/registry/node"
)

// put sends a Consul client's PUT to the node's Consul API.
func put(t *testing.T, nd *node.Node, path, body string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+nd.ConsulAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestConsulWritesHaveTheGRPCWriteRate(t *testing.T) {
	c := consulCluster(t, func(cfg *node.Config) { cfg.Limits.WriteRate, cfg.Limits.WriteBurst = 0.01, 1 })
	nd := c.Nodes[c.Leader()]
	reg := `{"Name": "web", "ID": "web-1", "Address": "127.0.0.1", "Port": 8081, "Check": {"TTL": "30s"}}`
	if resp, body := put(t, nd, "/v1/agent/service/register", reg, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("first register: %s %s", resp.Status, body)
	}
	resp, body := put(t, nd, "/v1/agent/service/register", reg, nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second register over a write rate of 0.01/s: %s, Retry-After %q, %s; want 429 with Retry-After",
			resp.Status, resp.Header.Get("Retry-After"), body)
	}
}

func TestConsulWriteFromAWebPageIsRefused(t *testing.T) {
	c := consulCluster(t, nil)
	reg := `{"Name": "web", "ID": "web-1", "Address": "127.0.0.1", "Port": 8081}`
	resp, body := put(t, c.Nodes[0], "/v1/agent/service/register", reg, http.Header{"Origin": {"http://evil.example"}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Origin") {
		t.Errorf("register with an Origin header: %s %s; want 403 naming the Origin", resp.Status, body)
	}
	resp, body = put(t, c.Nodes[0], "/v1/agent/service/register", `{"Name": `, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "request body") {
		t.Errorf("register with a cut body: %s %s; want 400 naming the request body", resp.Status, body)
	}
	resp, body = put(t, c.Nodes[0], "/v1/agent/service/register", `{"Name": "`+strings.Repeat("x", 2<<20)+`"}`, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "limit") {
		t.Errorf("register with a 2 MiB body: %s %.200s; want 400 naming the limit", resp.Status, body)
	}
}
