package rpc

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/acl"
	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/fsm/fsmtest"
)

// Every method of the public services has a rule: a method added to the
// protos without one would be denied to everyone, management included.
func TestRulesCoverEveryMethod(t *testing.T) {
	for _, sd := range []*grpc.ServiceDesc{&registryv1.Registry_ServiceDesc, &registryv1.Cluster_ServiceDesc, &registryv1.ACL_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, st := range sd.Streams {
			names = append(names, st.StreamName)
		}
		for _, n := range names {
			if _, ok := rules["/"+sd.ServiceName+"/"+n]; !ok {
				t.Errorf("method /%s/%s has no ACL rule", sd.ServiceName, n)
			}
		}
	}
}

// aclServer is a Server over a real fsm holding a management token, a
// token for service orders and one for operator read.
func aclServer(t *testing.T) (*Server, *fsm.FSM, map[string]acl.Secret) {
	t.Helper()
	f := fsmtest.New(t, fsm.Config{})
	secrets := map[string]acl.Secret{"mgmt": acl.NewSecret(), "orders": acl.NewSecret(), "ops": acl.NewSecret()}
	for i, msg := range []proto.Message{
		&fsmpb.ACLBootstrap{AccessorId: "mgmt", SecretHash: acl.HashSecret(secrets["mgmt"])},
		&fsmpb.ACLPolicySet{Name: "orders", Rules: `service "orders" { policy = "write" }`},
		&fsmpb.ACLPolicySet{Name: "ops", Rules: `operator = "read"`},
		&fsmpb.ACLTokenSet{AccessorId: "orders", SecretHash: acl.HashSecret(secrets["orders"]), Policies: []string{"orders"}},
		&fsmpb.ACLTokenSet{AccessorId: "ops", SecretHash: acl.HashSecret(secrets["ops"]), Policies: []string{"ops"}},
	} {
		if err, ok := fsmtest.Apply(t, f, uint64(i+1), msg).(error); ok {
			t.Fatal(err)
		}
	}
	s := &Server{resolver: NewResolver(f, acl.DefaultDeny)}
	return s, f, secrets
}

func withToken(secret acl.Secret) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+string(secret)))
}

func TestAuthorize(t *testing.T) {
	s, _, secrets := aclServer(t)
	reg := func(svc string) any {
		return &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: svc, Id: "a"}}
	}
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		method  string
		req     any
		code    codes.Code
		needing string
	}{
		{"no token", context.Background(), registryv1.Registry_Register_FullMethodName, reg("orders"), codes.Unauthenticated, ""},
		{"unknown token", withToken(acl.NewSecret()), registryv1.Registry_Register_FullMethodName, reg("orders"), codes.Unauthenticated, ""},
		{"own service", withToken(secrets["orders"]), registryv1.Registry_Register_FullMethodName, reg("orders"), codes.OK, ""},
		{"other service", withToken(secrets["orders"]), registryv1.Registry_Register_FullMethodName, reg("payments"), codes.PermissionDenied, "service:payments:write"},
		{"beat other service", withToken(secrets["orders"]), registryv1.Registry_Beat_FullMethodName,
			&registryv1.BeatRequest{Beats: []*registryv1.InstanceRef{{Service: "orders", Id: "a"}, {Service: "payments", Id: "b"}}},
			codes.PermissionDenied, "service:payments:write"},
		{"read other service", withToken(secrets["orders"]), registryv1.Registry_GetService_FullMethodName,
			&registryv1.GetServiceRequest{Service: "payments"}, codes.PermissionDenied, "service:payments:read"},
		{"cluster status without operator", withToken(secrets["orders"]), registryv1.Cluster_Status_FullMethodName, &registryv1.StatusRequest{}, codes.PermissionDenied, "operator:read"},
		{"cluster status with operator read", withToken(secrets["ops"]), registryv1.Cluster_Status_FullMethodName, &registryv1.StatusRequest{}, codes.OK, ""},
		{"cluster remove with operator read", withToken(secrets["ops"]), registryv1.Cluster_Remove_FullMethodName, &registryv1.RemoveRequest{}, codes.PermissionDenied, "operator:write"},
		{"acl write without acl", withToken(secrets["ops"]), registryv1.ACL_TokenCreate_FullMethodName, &registryv1.ACLTokenCreateRequest{}, codes.PermissionDenied, "acl:write"},
		{"management", withToken(secrets["mgmt"]), registryv1.ACL_TokenCreate_FullMethodName, &registryv1.ACLTokenCreateRequest{}, codes.OK, ""},
		{"bootstrap needs no token", context.Background(), registryv1.ACL_Bootstrap_FullMethodName, &registryv1.ACLBootstrapRequest{}, codes.OK, ""},
		{"method not in the table", withToken(secrets["mgmt"]), "/registry.v1.Registry/Unlisted", nil, codes.PermissionDenied, "not in the ACL table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, r, err := s.authorize(tc.ctx, tc.method)
			if err == nil {
				err = r.check(ctx, tc.req)
			}
			st := status.Convert(s.toStatus(err))
			if st.Code() != tc.code {
				t.Fatalf("code = %v (%v), want %v", st.Code(), err, tc.code)
			}
			if tc.needing != "" && !strings.Contains(st.Message(), tc.needing) {
				t.Errorf("message %q does not name %q", st.Message(), tc.needing)
			}
		})
	}
}

// A deleted token is refused from the moment its deletion is applied,
// although it was resolved (and cached) just before.
func TestResolverDropsDeletedToken(t *testing.T) {
	s, f, secrets := aclServer(t)
	if _, err := s.resolver.Resolve(secrets["orders"]); err != nil {
		t.Fatal(err)
	}
	fsmtest.Apply(t, f, 6, &fsmpb.ACLTokenDelete{AccessorId: "orders"})
	if _, err := s.resolver.Resolve(secrets["orders"]); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Resolve after delete = %v, want ErrUnauthenticated", err)
	}
	// A policy change reaches a cached token's authorizer too.
	z, err := s.resolver.Resolve(secrets["ops"])
	if err != nil || z.Authz.OperatorWrite().Allowed() {
		t.Fatalf("ops: %v, operator write %v", err, z.Authz.OperatorWrite().Allowed())
	}
	fsmtest.Apply(t, f, 7, &fsmpb.ACLPolicySet{Name: "ops", Rules: `operator = "write"`})
	if z, _ := s.resolver.Resolve(secrets["ops"]); !z.Authz.OperatorWrite().Allowed() {
		t.Error("ops after its policy became operator write: still denied")
	}
}

// The audit line of an admin call names the accessor, the method, the
// target and the code, and never the secret.
func TestAuditLine(t *testing.T) {
	s, _, secrets := aclServer(t)
	var buf bytes.Buffer
	s.auditLog = slog.New(slog.NewTextHandler(&buf, nil))
	call := func(secret acl.Secret, req any) {
		info := &grpc.UnaryServerInfo{FullMethod: registryv1.Cluster_Remove_FullMethodName}
		_, _ = s.UnaryInterceptor()(withToken(secret), req, info, func(context.Context, any) (any, error) {
			return &registryv1.RemoveResponse{}, nil
		})
	}
	call(secrets["mgmt"], &registryv1.RemoveRequest{NodeId: "n3"})
	call(secrets["orders"], &registryv1.RemoveRequest{NodeId: "n2"})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("audit lines:\n%s\nwant 2", buf.String())
	}
	for i, want := range [][]string{
		{"audit=true", "accessor_id=mgmt", "method=/registry.v1.Cluster/Remove", "target=node/n3", "code=OK"},
		{"accessor_id=orders", "target=node/n2", "code=PermissionDenied"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("audit line %q has no %q", lines[i], w)
			}
		}
	}
	for _, secret := range secrets {
		if strings.Contains(buf.String(), string(secret)) {
			t.Error("an audit line holds a secret")
		}
	}
}
