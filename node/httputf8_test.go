package node_test

import (
	"strings"
	"testing"

	registryv1 "github.com/regcenter/registry/api/registryv1"
)

func TestTheHTTPAPIRefusesInvalidUTF8NamingTheField(t *testing.T) {
	c, leader, follower := newHTTPCluster(t)
	base := "http://" + c.Nodes[follower].HTTPAddr()
	in := &registryv1.Instance{Service: "orders", Id: "a", Address: "10.0.0.1:80", Incarnation: 5}
	if _, err := c.Registry(leader).Register(t.Context(), &registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, body string
		says                     string
	}{
		{"path parameter", "PUT", "/v1/services/orders/instances/b%FF", `{"address": "h:1"}`, "instance.id"},
		{"path parameter of a read", "GET", "/v1/services/%FForders", "", "service"},
		{"path parameter of a delete", "DELETE", "/v1/services/orders/instances/a%FE", "", "id"},
		{"JSON string", "PUT", "/v1/services/orders/instances/b", "{\"address\": \"h:1\xff\"}", "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(t, tt.method, base+tt.path, tt.body)
			if code != 400 || !strings.Contains(body, tt.says) {
				t.Errorf("%d %s; want 400 naming %q", code, body, tt.says)
			}
		})
	}
}
