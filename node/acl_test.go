package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/regcenter/registry/acl"
	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
)

func bearer(ctx context.Context, secret string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+secret)
}

// wantCode fails unless err has code and, if needing is set, names it.
func wantCode(t *testing.T, what string, err error, code codes.Code, needing string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Errorf("%s: %v, want %v", what, err, code)
		return
	}
	if needing != "" && !strings.Contains(st.Message(), needing) {
		t.Errorf("%s: %q does not name %q", what, st.Message(), needing)
	}
}

func TestACLCluster(t *testing.T) {
	logs := &nodetest.Buffer{}
	c := nodetest.New(t, 3, func(cfg *node.Config) {
		cfg.ACLEnabled = true
		cfg.Logger = slog.New(slog.NewTextHandler(logs, nil)).With("test_node", cfg.NodeID)
	})
	leader := c.Leader()
	follower := (leader + 1) % 3
	ctx := t.Context()
	aclc := func(i int) registryv1.ACLClient { return registryv1.NewACLClient(c.Conns[i]) }
	cluster := func(i int) registryv1.ClusterClient { return registryv1.NewClusterClient(c.Conns[i]) }

	// Bootstrap through a follower, once.
	boot, err := aclc(follower).Bootstrap(ctx, &registryv1.ACLBootstrapRequest{})
	if err != nil || boot.SecretId == "" {
		t.Fatalf("Bootstrap: %v, %v", boot, err)
	}
	_, err = aclc(leader).Bootstrap(ctx, &registryv1.ACLBootstrapRequest{})
	wantCode(t, "second bootstrap", err, codes.FailedPrecondition, "")
	mgmt := bearer(ctx, boot.SecretId)
	// A node knows a token once it has applied its creation.
	for i := range 3 {
		poll.Eventually(t, 5*time.Second, func(context.Context) error {
			_, err := aclc(i).PolicyList(mgmt, &registryv1.ACLPolicyListRequest{})
			return err
		})
	}

	// No token, or a made-up one: UNAUTHENTICATED.
	_, err = c.Registry(follower).Register(ctx, &registryv1.RegisterRequest{Instance: instance("orders", "o1")})
	wantCode(t, "Register without a token", err, codes.Unauthenticated, "")
	_, err = c.Registry(follower).ListServices(bearer(ctx, "00000000-0000-4000-8000-000000000000"), &registryv1.ListServicesRequest{})
	wantCode(t, "ListServices with an unknown token", err, codes.Unauthenticated, "")

	// A token for orders, made through a follower.
	if _, err := aclc(follower).PolicyCreate(mgmt, &registryv1.ACLPolicyCreateRequest{Name: "orders", Rules: `service "orders" { policy = "write" }`}); err != nil {
		t.Fatalf("PolicyCreate: %v", err)
	}
	_, err = aclc(follower).PolicyCreate(mgmt, &registryv1.ACLPolicyCreateRequest{Name: "bad", Rules: `service "x" { policy = "sometimes" }`})
	wantCode(t, "PolicyCreate with bad rules", err, codes.InvalidArgument, "")
	tok, err := aclc(follower).TokenCreate(mgmt, &registryv1.ACLTokenCreateRequest{Policies: []string{"orders"}, Description: "orders app"})
	if err != nil {
		t.Fatalf("TokenCreate: %v", err)
	}
	orders := bearer(ctx, tok.SecretId)

	// The orders token may write and read orders, through any node.
	for i := range 3 {
		poll.Eventually(t, 5*time.Second, func(context.Context) error {
			_, err := c.Registry(i).Register(orders, &registryv1.RegisterRequest{Instance: instance("orders", fmt.Sprintf("o%d", i))})
			return err
		})
	}
	if _, err := c.Registry(follower).Beat(orders, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "orders", Id: "o0", Incarnation: 1}}}); err != nil {
		t.Errorf("Beat orders through a follower: %v", err)
	}
	if _, err := c.Registry(leader).Register(mgmt, &registryv1.RegisterRequest{Instance: instance("payments", "p1")}); err != nil {
		t.Fatalf("Register payments with the management token: %v", err)
	}

	// ... and nothing of payments.
	_, err = c.Registry(follower).Register(orders, &registryv1.RegisterRequest{Instance: instance("payments", "p2")})
	wantCode(t, "Register payments", err, codes.PermissionDenied, "service:payments:write")
	_, err = c.Registry(follower).Beat(orders, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "payments", Id: "p1", Incarnation: 1}}})
	wantCode(t, "Beat payments", err, codes.PermissionDenied, "service:payments:write")
	_, err = c.Registry(follower).Deregister(orders, &registryv1.DeregisterRequest{Service: "payments", Id: "p1"})
	wantCode(t, "Deregister payments", err, codes.PermissionDenied, "service:payments:write")
	_, err = c.Registry(follower).GetService(orders, &registryv1.GetServiceRequest{Service: "payments"})
	wantCode(t, "GetService payments", err, codes.PermissionDenied, "service:payments:read")

	// A BeatStream frame for payments ends the stream with the denial.
	bs, err := c.Registry(follower).BeatStream(orders)
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.Send(&registryv1.BeatRequest{Seq: 1, Beats: []*registryv1.InstanceRef{{Service: "orders", Id: "o0", Incarnation: 1}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := bs.Recv(); err != nil || r.Retry != nil {
		t.Fatalf("BeatStream orders frame: %v, %v", r, err)
	}
	_ = bs.Send(&registryv1.BeatRequest{Seq: 2, Beats: []*registryv1.InstanceRef{{Service: "payments", Id: "p1", Incarnation: 1}}})
	_, err = bs.Recv()
	wantCode(t, "BeatStream payments frame", err, codes.PermissionDenied, "service:payments:write")

	// ListServices and Watch show orders only.
	ls, err := c.Registry(follower).ListServices(orders, &registryv1.ListServicesRequest{Consistency: registryv1.Consistency_CONSISTENCY_STALE})
	if err != nil || len(ls.Services) != 1 || ls.Services[0].Service != "orders" {
		t.Errorf("ListServices with the orders token: %v, %v; want orders only", ls, err)
	}
	wctx, cancel := context.WithCancel(orders)
	defer cancel()
	w, err := c.Registry(follower).Watch(wctx, &registryv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := w.Recv()
	if err != nil || !msg.IsReset || len(msg.Instances) == 0 || msg.More {
		t.Fatalf("Watch: %v, %v; want one reset message", msg, err)
	}
	for _, in := range msg.Instances {
		if in.Service != "orders" {
			t.Errorf("Watch of every service with the orders token shows %s/%s", in.Service, in.Id)
		}
	}
	// Events too: a payments change is not shown, the orders one after it is.
	if _, err := c.Registry(leader).Register(mgmt, &registryv1.RegisterRequest{Instance: instance("payments", "p9")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry(leader).Register(mgmt, &registryv1.RegisterRequest{Instance: instance("orders", "o9")}); err != nil {
		t.Fatal(err)
	}
	for seen := false; !seen; {
		msg, err := w.Recv()
		if err != nil {
			t.Fatalf("Watch events: %v", err)
		}
		for _, ev := range msg.Events {
			if ev.Instance.Service != "orders" {
				t.Errorf("Watch with the orders token shows an event of %s/%s", ev.Instance.Service, ev.Instance.Id)
			}
			seen = seen || ev.Instance.Id == "o9"
		}
	}
	cancel()
	wp, err := c.Registry(follower).Watch(orders, &registryv1.WatchRequest{Service: "payments"})
	if err == nil {
		_, err = wp.Recv()
	}
	wantCode(t, "Watch payments", err, codes.PermissionDenied, "service:payments:read")

	// Every Cluster call needs operator.
	_, err = cluster(follower).Status(orders, &registryv1.StatusRequest{})
	wantCode(t, "Status", err, codes.PermissionDenied, "operator:read")
	_, err = cluster(follower).Join(orders, &registryv1.JoinRequest{})
	wantCode(t, "Join", err, codes.PermissionDenied, "operator:write")
	_, err = cluster(follower).Remove(orders, &registryv1.RemoveRequest{})
	wantCode(t, "Remove", err, codes.PermissionDenied, "operator:write")
	_, err = cluster(follower).TransferLeadership(orders, &registryv1.TransferLeadershipRequest{})
	wantCode(t, "TransferLeadership", err, codes.PermissionDenied, "operator:write")
	_, err = cluster(follower).ReleaseExpiryGuard(orders, &registryv1.ReleaseExpiryGuardRequest{})
	wantCode(t, "ReleaseExpiryGuard", err, codes.PermissionDenied, "operator:write")
	ss, err := cluster(follower).SnapshotSave(orders, &registryv1.SnapshotSaveRequest{})
	if err == nil {
		_, err = ss.Recv()
	}
	wantCode(t, "SnapshotSave", err, codes.PermissionDenied, "operator:write")
	sr, err := cluster(follower).SnapshotRestore(orders)
	if err == nil {
		_, err = sr.CloseAndRecv()
	}
	wantCode(t, "SnapshotRestore", err, codes.PermissionDenied, "operator:write")
	_, err = aclc(follower).TokenList(orders, &registryv1.ACLTokenListRequest{})
	wantCode(t, "TokenList", err, codes.PermissionDenied, "acl:read")
	if _, err := cluster(follower).Status(mgmt, &registryv1.StatusRequest{}); err != nil {
		t.Errorf("Status with the management token: %v", err)
	}

	// The orders token can deregister its own.
	if _, err := c.Registry(follower).Deregister(orders, &registryv1.DeregisterRequest{Service: "orders", Id: "o2"}); err != nil {
		t.Errorf("Deregister orders: %v", err)
	}

	// Streams opened before the delete end with it.
	// Bounded: a watch that outlived the token would block here.
	openCtx, cancelOpen := context.WithTimeout(orders, 10*time.Second)
	defer cancelOpen()
	openWatch, err := c.Registry(follower).Watch(openCtx, &registryv1.WatchRequest{Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openWatch.Recv(); err != nil {
		t.Fatal(err)
	}
	openBeats, err := c.Registry(follower).BeatStream(openCtx)
	if err != nil {
		t.Fatal(err)
	}

	// Deleted through one node, the token is refused by the other two.
	del := (leader + 2) % 3
	if _, err := aclc(del).TokenDelete(mgmt, &registryv1.ACLTokenDeleteRequest{AccessorId: tok.AccessorId}); err != nil {
		t.Fatalf("TokenDelete: %v", err)
	}
	for i := range 3 {
		if i == del {
			continue
		}
		poll.Eventually(t, 5*time.Second, func(context.Context) error {
			_, err := c.Registry(i).GetService(orders, &registryv1.GetServiceRequest{Service: "orders", Consistency: registryv1.Consistency_CONSISTENCY_STALE})
			if status.Code(err) != codes.Unauthenticated {
				return fmt.Errorf("n%d after the delete: %v", i+1, err)
			}
			return nil
		})
	}

	for {
		msg, err := openWatch.Recv()
		if err != nil {
			wantCode(t, "a watch open at the delete", err, codes.Unauthenticated, "")
			break
		}
		if msg.IsReset {
			t.Errorf("a watch open at the delete got a reset %v", msg)
		}
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		if err := openBeats.Send(&registryv1.BeatRequest{Seq: 9, Beats: []*registryv1.InstanceRef{{Service: "orders", Id: "o0", Incarnation: 1}}}); err != nil {
			_, err = openBeats.Recv() // the status the stream ended with
			wantCode(t, "a beat stream open at the delete", err, codes.Unauthenticated, "")
			return nil
		}
		if _, err := openBeats.Recv(); err != nil {
			wantCode(t, "a beat stream open at the delete", err, codes.Unauthenticated, "")
			return nil
		}
		return errors.New("the beat stream still takes frames of the deleted token")
	})

	// Audit lines name the accessor, never a secret.
	audit := logs.String()
	for _, want := range []string{"audit=true", "method=/registry.v1.Registry/Register", "accessor_id=" + tok.AccessorId, "code=PermissionDenied", "method=/registry.v1.ACL/TokenDelete", "target=token/" + tok.AccessorId, "target=orders/o2"} {
		if !strings.Contains(audit, want) {
			t.Errorf("the logs have no %q", want)
		}
	}
	for _, secret := range []string{boot.SecretId, tok.SecretId} {
		if strings.Contains(audit, secret) {
			t.Errorf("the logs hold a secret")
		}
	}
	if t.Failed() {
		t.Log(audit)
	}
}

// Over HTTP: the gateway passes the Authorization header on as the token,
// and the Prometheus SD endpoint, which reads the replica, filters by it.
func TestACLHTTP(t *testing.T) {
	c := nodetest.New(t, 1, func(cfg *node.Config) {
		cfg.ACLEnabled = true
		cfg.HTTPAddr = "127.0.0.1:0"
	})
	c.Leader()
	ctx := t.Context()
	aclc := registryv1.NewACLClient(c.Conns[0])
	boot, err := aclc.Bootstrap(ctx, &registryv1.ACLBootstrapRequest{})
	if err != nil {
		t.Fatal(err)
	}
	mgmt := bearer(ctx, boot.SecretId)
	if _, err := aclc.PolicyCreate(mgmt, &registryv1.ACLPolicyCreateRequest{Name: "orders", Rules: `service "orders" { policy = "read" }`}); err != nil {
		t.Fatal(err)
	}
	tok, err := aclc.TokenCreate(mgmt, &registryv1.ACLTokenCreateRequest{Policies: []string{"orders"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{"orders", "payments"} {
		if _, err := c.Registry(0).Register(mgmt, &registryv1.RegisterRequest{Instance: instance(svc, "a")}); err != nil {
			t.Fatal(err)
		}
	}
	get := func(path, secret string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Nodes[0].HTTPAddr()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if secret != "" {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, tc := range []struct {
		path, secret string
		code         int
		has, hasNot  string
	}{
		{"/v1/services", "", http.StatusUnauthorized, "", ""},
		{"/v1/services", tok.SecretId, http.StatusOK, `"orders"`, `"payments"`},
		{"/v1/services/payments", tok.SecretId, http.StatusForbidden, "service:payments:read", ""},
		{"/v1/sd/prometheus", "", http.StatusUnauthorized, "", ""},
		{"/v1/sd/prometheus", tok.SecretId, http.StatusOK, `"orders"`, `"payments"`},
		{"/v1/sd/prometheus", boot.SecretId, http.StatusOK, `"payments"`, ""},
		{"/v1/acl/tokens", boot.SecretId, http.StatusOK, tok.AccessorId, tok.SecretId},
		{"/v1/acl/tokens", tok.SecretId, http.StatusForbidden, "acl:read", ""},
	} {
		code, body := get(tc.path, tc.secret)
		if code != tc.code || !strings.Contains(body, tc.has) || (tc.hasNot != "" && strings.Contains(body, tc.hasNot)) {
			t.Errorf("GET %s (token %v): %d %s; want %d with %q without %q", tc.path, tc.secret != "", code, body, tc.code, tc.has, tc.hasNot)
		}
	}
}

// With ACLs on, a follower publishes its addresses through the leader's
// Cluster.Join, which needs operator:write: the node sends its ACLToken.
// Until a token with that secret exists the follower's record stays
// unpublished; once it does, every node records every node's addresses.
func TestWithACLsAFollowerPublishesItsAddressesWithTheNodesToken(t *testing.T) {
	secret := acl.NewSecret()
	c := nodetest.New(t, 3, func(cfg *node.Config) {
		cfg.ACLEnabled = true
		cfg.ACLToken = string(secret)
	})
	leader := c.Nodes[c.Leader()]
	if _, err := fsm.Propose[*fsm.ACLResult](t.Context(), leader, &fsmpb.ACLTokenSet{
		AccessorId: acl.NewAccessorID(), SecretHash: acl.HashSecret(secret),
		Description: "agent token of the test's nodes", Management: true,
	}); err != nil {
		t.Fatal(err)
	}
	for _, want := range c.Nodes {
		for j, nd := range c.Nodes {
			poll.Eventually(t, 10*time.Second, func(context.Context) error {
				if meta, ok := nd.FSM().Node(want.ID()); !ok || meta.GRPCAddress != want.GRPCAddr() {
					return fmt.Errorf("n%d's record of %s: %+v, want gRPC address %s", j+1, want.ID(), meta, want.GRPCAddr())
				}
				return nil
			})
		}
	}
}
