package node_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/regcenter/registry/node"
)

func TestBrowserWritesAreRefusedAndCurlStyleOnesServed(t *testing.T) {
	nd := oneHTTPNode(t, func(*node.Limits) {})
	base := "http://" + nd.HTTPAddr()
	register := base + "/v1/services/orders/instances/a"
	body := `{"address": "127.0.0.1:80"}`
	tests := []struct {
		name, method, url, contentType, body string
		header                               map[string]string
		want                                 int
		wantWhy                              string
	}{
		{"an HTML form POST", "POST", base + "/v1/beat", "application/x-www-form-urlencoded", `beats=x`, nil, 403, "Content-Type"},
		{"a no-cors fetch (text/plain)", "PUT", register, "text/plain", body, nil, 403, "Content-Type"},
		{"a multipart form", "POST", base + "/v1/beat", "multipart/form-data; boundary=x", "--x--", nil, 403, "Content-Type"},
		{"no Content-Type", "PUT", register, "", body, nil, 403, "Content-Type"},
		{"a foreign Origin", "PUT", register, "application/json", body, map[string]string{"Origin": "https://evil.example"}, 403, "origin"},
		{"a foreign Origin on DELETE", "DELETE", register, "", "", map[string]string{"Origin": "https://evil.example"}, 403, "origin"},
		{"a rebound host name", "GET", base + "/v1/services", "", "", map[string]string{"Host": "evil.example:7201"}, 403, "host"},
		{"a rebound host name writing", "PUT", register, "application/json", body, map[string]string{"Host": "evil.example"}, 403, "host"},
		{"curl with JSON", "PUT", register, "application/json", body, nil, 200, ""},
		{"JSON with a charset", "PUT", register, "application/json; charset=utf-8", body, nil, 200, ""},
		{"the node's own origin", "PUT", register, "application/json", body, map[string]string{"Origin": base}, 200, ""},
		{"localhost as the host", "GET", base + "/v1/services", "", "", map[string]string{"Host": "localhost"}, 200, ""},
		{"curl DELETE without a body", "DELETE", register, "", "", nil, 200, ""},
		{"a wrong method is still 405", "POST", base + "/v1/services/orders", "application/x-www-form-urlencoded", "a=b", nil, 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, tt.url, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			for k, v := range tt.header {
				if k == "Host" {
					req.Host = v
				} else {
					req.Header.Set(k, v)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.want {
				t.Fatalf("%s %s: %d %s, want %d", tt.method, tt.url, resp.StatusCode, data, tt.want)
			}
			if tt.want == 403 {
				var e struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				}
				if err := json.Unmarshal(data, &e); err != nil || e.Code != 7 || !strings.Contains(e.Message, tt.wantWhy) {
					t.Errorf("refusal body %s (%v), want JSON code 7 whose message says %q", data, err, tt.wantWhy)
				}
			}
		})
	}
}
