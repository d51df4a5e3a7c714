package node_test

import (
	"strings"
	"testing"
)

func TestTheHTTPAPIRefusesInvalidUTF8NamingTheField(t *testing.T) {
	c, _, follower := newHTTPCluster(t)
	base := "http://" + c.Nodes[follower].HTTPAddr()
	for _, tt := range []struct{ method, path, body, field string }{
		{"PUT", "/v1/services/orders/instances/b%FF", `{"address": "h:1"}`, "instance.id"},
		{"GET", "/v1/services/%FForders", "", "service"},
		{"DELETE", "/v1/services/orders/instances/a%FE", "", "id"},
		// protojson refuses a JSON string that is not UTF-8 (by position).
		{"PUT", "/v1/services/orders/instances/b", "{\"address\": \"h:1\xff\"}", "UTF-8"},
	} {
		if code, body := call(t, tt.method, base+tt.path, tt.body); code != 400 || !strings.Contains(body, tt.field) {
			t.Errorf("%s %s: %d %s; want 400 naming %q", tt.method, tt.path, code, body, tt.field)
		}
	}
}
