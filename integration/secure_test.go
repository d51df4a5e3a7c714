package integration_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/tlsutil"
	"github.com/regcenter/registry/tlsutil/tlstest"
)

// The attacks of issue 13, each tried against three registry-node
// processes with mutual TLS on every port and ACLs on (default deny), and
// each refused with its documented error.
func TestASecureClusterRefusesEveryAttack(t *testing.T) {
	t.Parallel()
	c := harness.Start(t, harness.Options{TLS: true, ACL: true, Spare: 2})
	ctx := t.Context()
	if _, err := c.WaitSettled(ctx); err != nil {
		t.Fatal(err)
	}
	leader := c.Leader()
	follower, other := c.Followers()[0], c.Followers()[1]

	// Two teams, each with a token that may write its own service only,
	// made through a follower with the management token.
	orders := createToken(t, c, follower, "orders", `service "orders" { policy = "write" }`)
	payments := createToken(t, c, follower, "payments", `service "payments" { policy = "write" }`)
	as := func(n *harness.Node, tok secureToken) *grpc.ClientConn {
		t.Helper()
		cc, err := n.DialToken(tok.secret)
		if err != nil {
			t.Fatal(err)
		}
		return cc
	}
	anonymous := secureToken{}
	ordersReg := registryv1.NewRegistryClient(as(follower, orders))
	paymentsReg := registryv1.NewRegistryClient(as(other, payments))

	owned := newInstance("payments", "p1", 1)
	if _, err := paymentsReg.Register(ctx, &registryv1.RegisterRequest{Instance: owned}); err != nil {
		t.Fatalf("payments registers its own instance: %v", err)
	}

	t.Run("no token or an unknown one is Unauthenticated", func(t *testing.T) {
		for name, tok := range map[string]secureToken{"no token": anonymous, "an unknown token": {secret: "00000000-0000-4000-8000-000000000000"}} {
			cc := as(follower, tok)
			reg, cl := registryv1.NewRegistryClient(cc), registryv1.NewClusterClient(cc)
			_, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: newInstance("orders", "o1", 2)})
			wantStatus(t, name+": Register", err, codes.Unauthenticated, "")
			_, err = reg.GetService(ctx, &registryv1.GetServiceRequest{Service: "payments"})
			wantStatus(t, name+": GetService", err, codes.Unauthenticated, "")
			_, err = reg.ListServices(ctx, &registryv1.ListServicesRequest{})
			wantStatus(t, name+": ListServices", err, codes.Unauthenticated, "")
			_, err = cl.Status(ctx, &registryv1.StatusRequest{})
			wantStatus(t, name+": Status", err, codes.Unauthenticated, "")
		}
	})

	t.Run("the ACLs are bootstrapped once, with a well-formed secret", func(t *testing.T) {
		anon := registryv1.NewACLClient(as(follower, anonymous))
		_, err := anon.Bootstrap(ctx, &registryv1.ACLBootstrapRequest{SecretId: "not-a-uuid"})
		wantStatus(t, "Bootstrap with a malformed secret", err, codes.InvalidArgument, "secret_id")
		_, err = anon.Bootstrap(ctx, &registryv1.ACLBootstrapRequest{SecretId: "00000000-0000-4000-8000-000000000001"})
		wantStatus(t, "a second Bootstrap", err, codes.FailedPrecondition, "")
	})

	t.Run("a token for orders can neither write nor read payments", func(t *testing.T) {
		if _, err := ordersReg.Register(ctx, &registryv1.RegisterRequest{Instance: newInstance("orders", "o1", 3)}); err != nil {
			t.Fatalf("orders registers orders: %v", err)
		}
		// A higher incarnation of payments' instance, at another address:
		// the takeover of issue 13.
		takeover := newInstance("payments", "p1", 666)
		takeover.Incarnation = owned.Incarnation + 1
		_, err := ordersReg.Register(ctx, &registryv1.RegisterRequest{Instance: takeover})
		wantStatus(t, "Register payments with a higher incarnation", err, codes.PermissionDenied, "service:payments:write")
		_, err = ordersReg.Beat(ctx, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "payments", Id: "p1", Incarnation: 1}}})
		wantStatus(t, "Beat payments", err, codes.PermissionDenied, "service:payments:write")
		_, err = ordersReg.Deregister(ctx, &registryv1.DeregisterRequest{Service: "payments", Id: "p1"})
		wantStatus(t, "Deregister payments", err, codes.PermissionDenied, "service:payments:write")
		_, err = ordersReg.GetService(ctx, &registryv1.GetServiceRequest{Service: "payments"})
		wantStatus(t, "GetService payments", err, codes.PermissionDenied, "service:payments:read")
		w, err := ordersReg.Watch(ctx, &registryv1.WatchRequest{Service: "payments"})
		if err == nil {
			_, err = w.Recv()
		}
		wantStatus(t, "Watch payments", err, codes.PermissionDenied, "service:payments:read")
		ls, err := ordersReg.ListServices(ctx, &registryv1.ListServicesRequest{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE})
		if err != nil {
			t.Fatalf("ListServices with the orders token: %v", err)
		}
		for _, s := range ls.GetServices() {
			if s.GetService() == "payments" {
				t.Errorf("ListServices with the orders token shows payments: %v", ls.GetServices())
			}
		}

		// The owner is not displaced: same address and incarnation, and
		// its beats are not FENCED.
		got, err := paymentsReg.GetService(ctx, &registryv1.GetServiceRequest{Service: "payments", Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE})
		if err != nil {
			t.Fatal(err)
		}
		if ins := got.GetInstances(); len(ins) != 1 || ins[0].GetAddress() != owned.Address || ins[0].GetIncarnation() != owned.Incarnation {
			t.Errorf("payments after the takeover attempt: %v; want p1 at %s, incarnation %d", ins, owned.Address, owned.Incarnation)
		}
		beat, err := paymentsReg.Beat(ctx, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "payments", Id: "p1", Incarnation: owned.Incarnation}}})
		if err != nil || len(beat.GetRejected()) != 0 {
			t.Errorf("the owner's beat after the takeover attempt: %v, %v; want accepted", beat, err)
		}
	})

	t.Run("an incarnation that would fence an id for good is InvalidArgument", func(t *testing.T) {
		in := newInstance("payments", "p2", 4)
		in.Incarnation = math.MaxUint64 // 18446744073709551615
		_, err := paymentsReg.Register(ctx, &registryv1.RegisterRequest{Instance: in})
		wantStatus(t, "Register with incarnation 2^64-1", err, codes.InvalidArgument, "incarnation")
		_, err = paymentsReg.Beat(ctx, &registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "payments", Id: "p1", Incarnation: math.MaxUint64}}})
		wantStatus(t, "Beat with incarnation 2^64-1", err, codes.InvalidArgument, "incarnation")
	})

	t.Run("every Cluster call needs operator", func(t *testing.T) {
		for name, tok := range map[string]secureToken{"orders token": orders, "no token": anonymous} {
			want, needing := codes.PermissionDenied, "operator:write"
			if tok == anonymous {
				want, needing = codes.Unauthenticated, ""
			}
			cl := registryv1.NewClusterClient(as(follower, tok))
			rogue := &registryv1.JoinRequest{NodeId: "rogue", RaftAddress: c.IP() + ":17999", GrpcAddress: c.IP() + ":17998"}
			// Join is refused on the client certificate first (only a
			// node's may join), whatever the token.
			_, err := cl.Join(ctx, rogue)
			wantStatus(t, name+": Join of a rogue voter", err, codes.PermissionDenied, "")
			_, err = cl.Remove(ctx, &registryv1.RemoveRequest{NodeId: other.ID()})
			wantStatus(t, name+": Remove", err, want, needing)
			_, err = cl.TransferLeadership(ctx, &registryv1.TransferLeadershipRequest{})
			wantStatus(t, name+": TransferLeadership", err, want, needing)
			_, err = cl.ReleaseExpiryGuard(ctx, &registryv1.ReleaseExpiryGuardRequest{})
			wantStatus(t, name+": ReleaseExpiryGuard", err, want, needing)
			save, err := cl.SnapshotSave(ctx, &registryv1.SnapshotSaveRequest{})
			if err == nil {
				_, err = save.Recv()
			}
			wantStatus(t, name+": SnapshotSave", err, want, needing)
			restore, err := cl.SnapshotRestore(ctx)
			if err == nil {
				_ = restore.Send(&registryv1.SnapshotChunk{Data: []byte("an old backup")})
				_, err = restore.CloseAndRecv()
			}
			wantStatus(t, name+": SnapshotRestore", err, want, needing)
			_, err = cl.Status(ctx, &registryv1.StatusRequest{})
			if tok != anonymous {
				needing = "operator:read"
			}
			wantStatus(t, name+": Status", err, want, needing)
		}
		// Even the management token cannot add a voter from a client
		// certificate: Join needs a node's.
		_, err := follower.ClusterClient().Join(ctx, &registryv1.JoinRequest{NodeId: "rogue", RaftAddress: c.IP() + ":17999", GrpcAddress: c.IP() + ":17998"})
		wantStatus(t, "Join with the management token and a client certificate", err, codes.PermissionDenied, tlsutil.ServerName)
		// Remove of an id that is not a member.
		_, err = follower.ClusterClient().Remove(ctx, &registryv1.RemoveRequest{NodeId: "n99"})
		wantStatus(t, "Remove of an unknown id", err, codes.NotFound, "n99")
		wantMembers(t, leader, c.Nodes())
	})

	t.Run("invalid UTF-8 over HTTP is 400", func(t *testing.T) {
		body, err := protojson.Marshal(newInstance("payments", "p3", 5))
		if err != nil {
			t.Fatal(err)
		}
		badField := bytes.Replace(body, []byte(`"10.0.0.5:8080"`), []byte("\"10.0.0.5\xff:8080\""), 1)
		if bytes.Equal(badField, body) {
			t.Fatalf("no address to spoil in %s", body)
		}
		for name, req := range map[string]struct {
			path string
			body []byte
		}{
			"a path":  {"/v1/services/pay%FFments/instances/p3", body},
			"a field": {"/v1/services/payments/instances/p3", badField},
		} {
			code, msg := httpPut(t, c, other, payments, req.path, req.body)
			if code != http.StatusBadRequest {
				t.Errorf("invalid UTF-8 in %s: %d %s, want 400", name, code, msg)
			}
		}
	})

	t.Run("no client certificate, or one of another CA, is refused on every port", func(t *testing.T) {
		otherCA, err := tlsutil.CreateCA(tlsutil.CAOptions{})
		if err != nil {
			t.Fatal(err)
		}
		probes := map[string]tlsutil.PEMPair{
			"no certificate":                     {},
			"a node certificate of another CA":   tlstest.Cert(t, otherCA, true),
			"a client certificate of another CA": tlstest.Cert(t, otherCA, false),
		}
		for name, cert := range probes {
			// It trusts the cluster's CA: only the node can refuse it.
			cfg := tlstest.ClientConfig(t, c.CA(), cert)
			for _, addr := range []string{leader.GRPCAddr(), leader.HTTPAddr(), leader.RaftAddr()} {
				if _, err := tlstest.PeerCertificate(t, addr, cfg); err == nil {
					t.Errorf("%s: %s accepted %s", name, addr, name)
				}
			}
		}

		// A node of another CA tries to join through a member: it is never
		// added, and the members keep replicating among themselves.
		outsider, err := c.StartOutsider(otherCA)
		if err != nil {
			t.Fatal(err)
		}
		poll.Eventually(t, 30*time.Second, func(context.Context) error {
			n := 0
			for line := range strings.Lines(outsider.LogTail(400)) {
				if strings.Contains(line, "publishing addresses") && strings.Contains(line, "remote error: tls") {
					n++
				}
			}
			if n < 2 {
				return fmt.Errorf("%s has been refused by a member %d times so far; waiting for 2", outsider, n)
			}
			return nil
		})
		wantMembers(t, leader, c.Nodes())
		resp, err := paymentsReg.Register(ctx, &registryv1.RegisterRequest{Instance: newInstance("payments", "p4", 6)})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WaitApplied(ctx, resp.GetIndex()); err != nil {
			t.Fatal(err)
		}
		wantMembers(t, leader, c.Nodes())
	})

	t.Run("a token deleted through one node is refused by the other two", func(t *testing.T) {
		temp := createToken(t, c, follower, "orders-temp", `service "orders" { policy = "write" }`)
		regs := map[*harness.Node]registryv1.RegistryClient{}
		for _, n := range c.Nodes() {
			regs[n] = registryv1.NewRegistryClient(as(n, temp))
			if _, err := regs[n].GetService(ctx, &registryv1.GetServiceRequest{Service: "orders"}); err != nil {
				t.Fatalf("the new token on %s: %v", n, err)
			}
		}
		if _, err := follower.ACLClient().TokenDelete(ctx, &registryv1.ACLTokenDeleteRequest{AccessorId: temp.accessor}); err != nil {
			t.Fatal(err)
		}
		for _, n := range []*harness.Node{leader, other} {
			poll.Eventually(t, 20*time.Second, func(context.Context) error {
				_, err := regs[n].Register(ctx, &registryv1.RegisterRequest{Instance: newInstance("orders", "o-temp", 7)})
				if status.Code(err) != codes.Unauthenticated {
					return fmt.Errorf("%s answers the deleted token with %v, want Unauthenticated", n, err)
				}
				return nil
			})
		}
	})

	t.Run("a node with a certificate of the cluster's CA and an operator token joins", func(t *testing.T) {
		n, err := c.AddNode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantMembers(t, leader, c.Nodes())
		if _, err := registryv1.NewRegistryClient(as(n, payments)).GetService(ctx, &registryv1.GetServiceRequest{Service: "payments"}); err != nil {
			t.Errorf("the payments token on the new node %s: %v", n, err)
		}
	})

	t.Run("audit lines name the accessor and hold no secret", func(t *testing.T) {
		secrets := []string{c.ManagementToken(), orders.secret, payments.secret}
		var audits []string
		for _, n := range c.Nodes() {
			data, err := os.ReadFile(n.LogPath())
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range secrets {
				if bytes.Contains(data, []byte(s)) {
					t.Errorf("%s's log holds a token's secret", n)
				}
			}
			for line := range strings.Lines(string(data)) {
				if strings.Contains(line, "audit=true") {
					audits = append(audits, line)
				}
			}
		}
		for _, want := range [][]string{
			{"accessor_id=" + orders.accessor, registryv1.Registry_Register_FullMethodName, "target=payments/p1", "code=PermissionDenied"},
			{"accessor_id=" + orders.accessor, registryv1.Cluster_TransferLeadership_FullMethodName, "code=PermissionDenied"},
			{"accessor_id=" + payments.accessor, registryv1.Registry_Register_FullMethodName, "target=payments/p1", "code=OK"},
			{"accessor_id=anonymous", registryv1.Registry_Register_FullMethodName, "code=Unauthenticated"},
			{registryv1.ACL_TokenDelete_FullMethodName, "code=OK"},
		} {
			if !containsLine(audits, want...) {
				t.Errorf("no audit line with all of %q among %d audit lines", want, len(audits))
			}
		}
	})
}

// secureToken is a token made by createToken; the zero value is no token.
type secureToken struct{ accessor, secret string }

// createToken creates a policy named name with rules and a token holding
// it, through n with the management token, and waits until every node has
// applied them.
func createToken(t *testing.T, c *harness.Cluster, n *harness.Node, name, rules string) secureToken {
	t.Helper()
	ctx := t.Context()
	if _, err := n.ACLClient().PolicyCreate(ctx, &registryv1.ACLPolicyCreateRequest{Name: name, Rules: rules}); err != nil {
		t.Fatalf("PolicyCreate %s: %v", name, err)
	}
	tok, err := n.ACLClient().TokenCreate(ctx, &registryv1.ACLTokenCreateRequest{Policies: []string{name}, Description: name + " app"})
	if err != nil {
		t.Fatalf("TokenCreate %s: %v", name, err)
	}
	if err := c.WaitApplied(ctx, tok.GetIndex()); err != nil {
		t.Fatal(err)
	}
	return secureToken{accessor: tok.GetAccessorId(), secret: tok.GetSecretId()}
}

// wantStatus fails unless err has code and, if needing is set, its message
// names it.
func wantStatus(t *testing.T, what string, err error, code codes.Code, needing string) {
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

// wantMembers fails unless leader's configuration is exactly nodes.
func wantMembers(t *testing.T, leader *harness.Node, nodes []*harness.Node) {
	t.Helper()
	st, err := leader.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, m := range st.GetMembers() {
		got = append(got, m.GetId())
	}
	for _, n := range nodes {
		want = append(want, n.ID())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("members %v, want %v", got, want)
	}
}

// httpPut PUTs body as JSON to path on n's HTTP port with tok and returns
// the status code and the start of the answer.
func httpPut(t *testing.T, c *harness.Cluster, n *harness.Node, tok secureToken, path string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, n.HTTPURL(path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok.secret)
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return resp.StatusCode, string(msg)
}

// containsLine reports whether one of lines contains every one of parts.
func containsLine(lines []string, parts ...string) bool {
	for _, l := range lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}
