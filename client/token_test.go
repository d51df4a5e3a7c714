package client_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
)

// Config.Token is sent on every call, over plaintext loopback too.
func TestTokenIsSentOnEveryCall(t *testing.T) {
	cl := nodetest.New(t, 1, func(cfg *node.Config) { cfg.ACLEnabled = true })
	cl.Leader()
	ctx := t.Context()
	acl := registryv1.NewACLClient(cl.Conns[0])
	boot, err := acl.Bootstrap(ctx, &registryv1.ACLBootstrapRequest{})
	if err != nil {
		t.Fatal(err)
	}
	mgmt := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+boot.SecretId)
	if _, err := acl.PolicyCreate(mgmt, &registryv1.ACLPolicyCreateRequest{Name: "orders", Rules: `service "orders" { policy = "write" }`}); err != nil {
		t.Fatal(err)
	}
	tok, err := acl.TokenCreate(mgmt, &registryv1.ACLTokenCreateRequest{Policies: []string{"orders"}})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		token string
		code  codes.Code
	}{{"", codes.Unauthenticated}, {tok.SecretId, codes.OK}} {
		c, err := client.New(client.Config{Endpoints: cl.Endpoints(), Token: tc.token, CallTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		reg, err := c.Register(rctx, client.Instance{Service: "orders", ID: "o1", Address: "10.0.0.1:80"}, fast...)
		cancel()
		if got := status.Code(err); got != tc.code {
			t.Errorf("Register (token set: %v): %v, want %v", tc.token != "", err, tc.code)
		}
		if reg != nil {
			if err := reg.Deregister(ctx); err != nil {
				t.Errorf("Deregister with the token: %v", err)
			}
		}
		c.Close()
	}
}
