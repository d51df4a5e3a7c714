package rpc

import (
	"context"
	"encoding/hex"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/acl"
	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
	"github.com/regcenter/registry/fsm/fsmpb"
	"github.com/regcenter/registry/validate"
)

// The ACL service. Writes run on the leader (a follower forwards them, with
// the caller's token); the leader generates accessor ids and secrets and
// proposes only the secret's hash. Lists read the local replica.

// onLeader runs the write locally on the leader, or forwards it with call.
func onLeader[Resp any](ctx context.Context, s *Server, method string, call func(context.Context, registryv1.ACLClient) (Resp, error), local func() (Resp, error)) (Resp, error) {
	if !s.cluster.IsLeader() {
		return forward(ctx, s, method, func(ctx context.Context, cc *grpc.ClientConn) (Resp, error) {
			return call(ctx, registryv1.NewACLClient(cc))
		})
	}
	resp, err := local()
	if err != nil {
		var zero Resp
		return zero, s.toStatus(err)
	}
	return resp, nil
}

// Bootstrap implements registry.v1.ACL.
//
// A chosen secret (secret_id) must be a UUID in its canonical text form;
// it is checked here, before anything is forwarded or proposed. The leader
// proposes only its hash, as for a random one, so the FSM's command is the
// same either way.
func (s *Server) Bootstrap(ctx context.Context, req *registryv1.ACLBootstrapRequest) (*registryv1.ACLTokenSecret, error) {
	if req.SecretId != "" && !isUUID(req.SecretId) {
		return nil, s.toStatus(validate.FieldErrorf("secret_id", "must be a UUID (8-4-4-4-12 hexadecimal digits, 36 characters), like the secrets the registry makes"))
	}
	return onLeader(ctx, s, registryv1.ACL_Bootstrap_FullMethodName,
		func(ctx context.Context, c registryv1.ACLClient) (*registryv1.ACLTokenSecret, error) {
			return c.Bootstrap(ctx, req)
		},
		func() (*registryv1.ACLTokenSecret, error) {
			secret, accessor := acl.NewSecret(), acl.NewAccessorID()
			if req.SecretId != "" {
				secret = acl.Secret(req.SecretId)
			}
			res, err := fsm.Propose[*fsm.ACLResult](ctx, s.applier, &fsmpb.ACLBootstrap{
				AccessorId:  accessor,
				SecretHash:  acl.HashSecret(secret),
				Description: "bootstrap management token",
			})
			if err != nil {
				return nil, err
			}
			return &registryv1.ACLTokenSecret{AccessorId: accessor, SecretId: string(secret), Index: res.Index}, nil
		})
}

// PolicyCreate implements registry.v1.ACL. The rules are parsed before
// anything is proposed.
func (s *Server) PolicyCreate(ctx context.Context, req *registryv1.ACLPolicyCreateRequest) (*registryv1.ACLPolicyCreateResponse, error) {
	if err := validate.Name("name", req.Name); err != nil {
		return nil, s.toStatus(err)
	}
	if _, err := acl.Parse([]byte(req.Rules)); err != nil {
		return nil, s.toStatus(err)
	}
	return onLeader(ctx, s, registryv1.ACL_PolicyCreate_FullMethodName,
		func(ctx context.Context, c registryv1.ACLClient) (*registryv1.ACLPolicyCreateResponse, error) {
			return c.PolicyCreate(ctx, req)
		},
		func() (*registryv1.ACLPolicyCreateResponse, error) {
			index, err := s.proposeACL(ctx, &fsmpb.ACLPolicySet{Name: req.Name, Rules: req.Rules})
			return &registryv1.ACLPolicyCreateResponse{Index: index}, err
		})
}

// PolicyList implements registry.v1.ACL from the local replica.
func (s *Server) PolicyList(context.Context, *registryv1.ACLPolicyListRequest) (*registryv1.ACLPolicyListResponse, error) {
	pols, index := s.state.ACLPolicies()
	out := &registryv1.ACLPolicyListResponse{Index: index}
	for _, p := range pols {
		out.Policies = append(out.Policies, &registryv1.ACLPolicy{Name: p.Name, Rules: p.Rules})
	}
	return out, nil
}

// PolicyDelete implements registry.v1.ACL.
func (s *Server) PolicyDelete(ctx context.Context, req *registryv1.ACLPolicyDeleteRequest) (*registryv1.ACLPolicyDeleteResponse, error) {
	return onLeader(ctx, s, registryv1.ACL_PolicyDelete_FullMethodName,
		func(ctx context.Context, c registryv1.ACLClient) (*registryv1.ACLPolicyDeleteResponse, error) {
			return c.PolicyDelete(ctx, req)
		},
		func() (*registryv1.ACLPolicyDeleteResponse, error) {
			index, err := s.proposeACL(ctx, &fsmpb.ACLPolicyDelete{Name: req.Name})
			return &registryv1.ACLPolicyDeleteResponse{Index: index}, err
		})
}

// TokenCreate implements registry.v1.ACL. Every policy named must exist on
// the leader; the secret is returned here and never again.
func (s *Server) TokenCreate(ctx context.Context, req *registryv1.ACLTokenCreateRequest) (*registryv1.ACLTokenSecret, error) {
	if len(req.Policies) == 0 {
		return nil, s.toStatus(validate.FieldErrorf("policies", "at least one policy is required"))
	}
	return onLeader(ctx, s, registryv1.ACL_TokenCreate_FullMethodName,
		func(ctx context.Context, c registryv1.ACLClient) (*registryv1.ACLTokenSecret, error) {
			return c.TokenCreate(ctx, req)
		},
		func() (*registryv1.ACLTokenSecret, error) {
			for _, name := range req.Policies {
				if _, ok := s.state.ACLPolicy(name); !ok {
					return nil, validate.FieldErrorf("policies", "policy %q does not exist", name)
				}
			}
			secret, accessor := acl.NewSecret(), acl.NewAccessorID()
			res, err := fsm.Propose[*fsm.ACLResult](ctx, s.applier, &fsmpb.ACLTokenSet{
				AccessorId:  accessor,
				SecretHash:  acl.HashSecret(secret),
				Policies:    req.Policies,
				Description: req.Description,
			})
			if err != nil {
				return nil, err
			}
			return &registryv1.ACLTokenSecret{AccessorId: accessor, SecretId: string(secret), Index: res.Index}, nil
		})
}

// TokenList implements registry.v1.ACL from the local replica, without
// secrets (the replica has none).
func (s *Server) TokenList(context.Context, *registryv1.ACLTokenListRequest) (*registryv1.ACLTokenListResponse, error) {
	toks, index := s.state.ACLTokens()
	out := &registryv1.ACLTokenListResponse{Index: index}
	for _, t := range toks {
		out.Tokens = append(out.Tokens, &registryv1.ACLToken{
			AccessorId: t.AccessorID, Policies: t.Policies, Description: t.Description, Management: t.Management,
		})
	}
	return out, nil
}

// TokenDelete implements registry.v1.ACL.
func (s *Server) TokenDelete(ctx context.Context, req *registryv1.ACLTokenDeleteRequest) (*registryv1.ACLTokenDeleteResponse, error) {
	return onLeader(ctx, s, registryv1.ACL_TokenDelete_FullMethodName,
		func(ctx context.Context, c registryv1.ACLClient) (*registryv1.ACLTokenDeleteResponse, error) {
			return c.TokenDelete(ctx, req)
		},
		func() (*registryv1.ACLTokenDeleteResponse, error) {
			index, err := s.proposeACL(ctx, &fsmpb.ACLTokenDelete{AccessorId: req.AccessorId})
			return &registryv1.ACLTokenDeleteResponse{Index: index}, err
		})
}

// proposeACL proposes an ACL command and returns its index.
func (s *Server) proposeACL(ctx context.Context, cmd proto.Message) (uint64, error) {
	res, err := fsm.Propose[*fsm.ACLResult](ctx, s.applier, cmd)
	if err != nil {
		return 0, err
	}
	return res.Index, nil
}

// isUUID reports whether v is a UUID in canonical text form
// (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, hexadecimal digits).
func isUUID(v string) bool {
	if len(v) != 36 || v[8] != '-' || v[13] != '-' || v[18] != '-' || v[23] != '-' {
		return false
	}
	_, err := hex.DecodeString(v[0:8] + v[9:13] + v[14:18] + v[19:23] + v[24:36])
	return err == nil
}
