package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/regcenter/registry/acl"
	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/fsm"
)

// ErrUnauthenticated: ACLs are enabled and the call carries no token, a
// malformed one, or a secret no token has. UNAUTHENTICATED.
var ErrUnauthenticated = errors.New("unauthenticated: a valid ACL token is required")

// authorizationKey is the gRPC metadata key of the bearer token; the HTTP
// gateway forwards the Authorization header under it.
const authorizationKey = "authorization"

// ACLReader reads the ACL part of the local replica. *fsm.FSM implements it.
type ACLReader interface {
	// ACLIndex moves at every change to the ACL records (and at a restore).
	ACLIndex() uint64
	// ACLResolve returns the token whose secret hashes to hash, the rules of
	// its existing policies and the ACL index they reflect.
	ACLResolve(hash []byte) (fsm.ACLToken, []fsm.ACLPolicy, uint64, bool)
}

// Identity is who made a call: the token's accessor id (never its secret)
// and what it may do.
type Identity struct {
	AccessorID string
	Authz      *acl.Authorizer
}

// maxResolved bounds the Resolver's cache; a full cache is emptied.
const maxResolved = 4096

// Resolver turns bearer secrets into Identities from the local replica. It
// caches compiled Authorizers by secret hash for as long as the replica's
// ACL index does not move: a token deleted (or a policy changed) is
// refused here from the moment the change is applied here. It is safe for
// concurrent use.
type Resolver struct {
	state ACLReader
	def   acl.Default

	mu    sync.Mutex
	index uint64
	cache map[string]Identity // string(secret hash) → identity
}

// NewResolver returns a Resolver over state; def decides where no rule of
// a token matches.
func NewResolver(state ACLReader, def acl.Default) *Resolver {
	return &Resolver{state: state, def: def, cache: make(map[string]Identity)}
}

// Resolve returns the identity of secret, or ErrUnauthenticated.
func (r *Resolver) Resolve(secret acl.Secret) (Identity, error) {
	hash := acl.HashSecret(secret)
	now := r.state.ACLIndex()
	r.mu.Lock()
	if r.index != now {
		clear(r.cache)
		r.index = now
	}
	id, ok := r.cache[string(hash)]
	r.mu.Unlock()
	if ok {
		return id, nil
	}
	tok, pols, at, found := r.state.ACLResolve(hash)
	if !found {
		return Identity{}, ErrUnauthenticated
	}
	stored := acl.Token{AccessorID: tok.AccessorID, SecretHash: tok.SecretHash}
	if !stored.Matches(secret) { // constant time, and a guard on the lookup
		return Identity{}, ErrUnauthenticated
	}
	id = Identity{AccessorID: tok.AccessorID, Authz: acl.Management()}
	if !tok.Management {
		parsed := make([]*acl.Policy, 0, len(pols))
		for _, p := range pols {
			pol, err := acl.Parse([]byte(p.Rules))
			if err != nil {
				// Rules are checked before they are proposed; a policy that
				// no longer parses grants nothing.
				continue
			}
			parsed = append(parsed, pol)
		}
		id.Authz = acl.NewAuthorizer(r.def, parsed...)
	}
	r.mu.Lock()
	if r.index == at { // not compiled from a state older than the cache's
		if len(r.cache) >= maxResolved {
			clear(r.cache)
		}
		r.cache[string(hash)] = id
	}
	r.mu.Unlock()
	return id, nil
}

// ResolveHeader resolves an Authorization header (or metadata) value.
func (r *Resolver) ResolveHeader(v string) (Identity, error) {
	if v == "" {
		return Identity{}, ErrUnauthenticated
	}
	secret, err := acl.ParseBearer(v)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return r.Resolve(secret)
}

type callerKey struct{}

// caller is the token of a call, kept in its context. Its identity is
// resolved again at every use (a cache hit while the ACL state does not
// change), so that a stream outlives neither its token nor a narrowing of
// its policies.
type caller struct {
	header   string
	accessor string // at the start of the call, for the audit line
	resolver *Resolver
}

// identityFrom returns the caller's current identity, or an error when its
// token no longer resolves; on is false when ACLs are off.
func identityFrom(ctx context.Context) (id Identity, on bool, err error) {
	c, ok := ctx.Value(callerKey{}).(*caller)
	if !ok {
		return Identity{}, false, nil
	}
	id, err = c.resolver.ResolveHeader(c.header)
	return id, true, err
}

// stillAuthenticated fails once the caller's token no longer resolves; a
// Watch checks it before every message.
func stillAuthenticated(ctx context.Context) error {
	_, _, err := identityFrom(ctx)
	return err
}

// readFilter returns whether the caller may read a service, resolving the
// caller once for all the services asked about: every service when ACLs
// are off, none when its token no longer resolves. ListServices and Watch
// filter by it.
func readFilter(ctx context.Context) func(service string) bool {
	id, on, err := identityFrom(ctx)
	switch {
	case !on:
		return func(string) bool { return true }
	case err != nil:
		return func(string) bool { return false }
	}
	return func(service string) bool { return id.Authz.ServiceRead(service).Allowed() }
}

// rule is what one gRPC method needs.
type rule struct {
	// anonymous methods need no token.
	anonymous bool
	// start, if set, is checked once before the handler runs.
	start func(z *acl.Authorizer) acl.Decision
	// each, if set, is checked on every request message.
	each func(z *acl.Authorizer, req any) error
	// audit, if set, makes the call write an audit line naming the target
	// it returns; resp is nil for streams and failed calls.
	audit func(req, resp any) string
}

// serviceWrite needs service write on the service of a request, whose
// instance is the audit target.
func serviceWrite(service, id func(req any) string) rule {
	return rule{
		each:  func(z *acl.Authorizer, req any) error { return z.ServiceWrite(service(req)).Err() },
		audit: func(req, _ any) string { return service(req) + "/" + id(req) },
	}
}

func operatorRead() rule { return rule{start: (*acl.Authorizer).OperatorRead} }

// operatorWrite is audited; the target is the node a request names, if any.
func operatorWrite() rule {
	return rule{start: (*acl.Authorizer).OperatorWrite, audit: func(req, _ any) string {
		if r, ok := req.(interface{ GetNodeId() string }); ok && r.GetNodeId() != "" {
			return "node/" + r.GetNodeId()
		}
		return ""
	}}
}

func aclWrite(target func(req, resp any) string) rule {
	return rule{start: (*acl.Authorizer).ACLWrite, audit: target}
}

// beatsWrite needs service write on every service of a beat request.
func beatsWrite(z *acl.Authorizer, req any) error {
	for _, b := range req.(*registryv1.BeatRequest).GetBeats() {
		if err := z.ServiceWrite(b.GetService()).Err(); err != nil {
			return err
		}
	}
	return nil
}

// rules is the one place that decides what each gRPC method needs when
// ACLs are enabled. A method missing here is denied.
var rules = map[string]rule{
	registryv1.Registry_Register_FullMethodName: serviceWrite(
		func(req any) string { return req.(*registryv1.RegisterRequest).GetInstance().GetService() },
		func(req any) string { return req.(*registryv1.RegisterRequest).GetInstance().GetId() }),
	registryv1.Registry_Deregister_FullMethodName: serviceWrite(
		func(req any) string { return req.(*registryv1.DeregisterRequest).GetService() },
		func(req any) string { return req.(*registryv1.DeregisterRequest).GetId() }),
	// Beats are not audited: they are the steady traffic of every instance.
	registryv1.Registry_Beat_FullMethodName:       {each: beatsWrite},
	registryv1.Registry_BeatStream_FullMethodName: {each: beatsWrite},
	// Each forwarded UDP datagram carries its own permission: its MAC under
	// a key only a Register with service write was given (udpbeats.go).
	registryv1.Registry_ForwardUdpBeats_FullMethodName: {anonymous: true},
	// Forwarded writes need a token; the handler checks each write's
	// service against it, so that one refused write fails alone.
	registryv1.Registry_ForwardWrites_FullMethodName: {audit: forwardAuditTarget},
	registryv1.Registry_GetService_FullMethodName: {each: func(z *acl.Authorizer, req any) error {
		return z.ServiceRead(req.(*registryv1.GetServiceRequest).GetService()).Err()
	}},
	// ListServices and Watch need a token and return only what it may read.
	registryv1.Registry_ListServices_FullMethodName: {},
	registryv1.Registry_Watch_FullMethodName: {each: func(z *acl.Authorizer, req any) error {
		if svc := req.(*registryv1.WatchRequest).GetService(); svc != "" {
			return z.ServiceRead(svc).Err()
		}
		return nil
	}},
	// WatchMany needs a token; each watch it creates is checked as a
	// Watch is, by the handler (watchmux.go), and refused on its own.
	registryv1.Registry_WatchMany_FullMethodName: {},

	registryv1.Cluster_Status_FullMethodName:             operatorRead(),
	registryv1.Cluster_Join_FullMethodName:               operatorWrite(),
	registryv1.Cluster_Remove_FullMethodName:             operatorWrite(),
	registryv1.Cluster_TransferLeadership_FullMethodName: operatorWrite(),
	registryv1.Cluster_Promote_FullMethodName:            operatorWrite(),
	registryv1.Cluster_Demote_FullMethodName:             operatorWrite(),
	registryv1.Cluster_ReleaseExpiryGuard_FullMethodName: operatorWrite(),
	registryv1.Cluster_SnapshotSave_FullMethodName:       operatorWrite(),
	registryv1.Cluster_SnapshotRestore_FullMethodName:    operatorWrite(),

	registryv1.ACL_Bootstrap_FullMethodName: {anonymous: true, audit: newToken},
	registryv1.ACL_PolicyCreate_FullMethodName: aclWrite(func(req, _ any) string {
		return "policy/" + req.(*registryv1.ACLPolicyCreateRequest).GetName()
	}),
	registryv1.ACL_PolicyList_FullMethodName: {start: (*acl.Authorizer).ACLRead},
	registryv1.ACL_PolicyDelete_FullMethodName: aclWrite(func(req, _ any) string {
		return "policy/" + req.(*registryv1.ACLPolicyDeleteRequest).GetName()
	}),
	registryv1.ACL_TokenCreate_FullMethodName: aclWrite(newToken),
	registryv1.ACL_TokenList_FullMethodName:   {start: (*acl.Authorizer).ACLRead},
	registryv1.ACL_TokenDelete_FullMethodName: aclWrite(func(req, _ any) string {
		return "token/" + req.(*registryv1.ACLTokenDeleteRequest).GetAccessorId()
	}),

	// Health checks carry nothing to protect; probes have no token.
	"/grpc.health.v1.Health/Check": {anonymous: true},
	"/grpc.health.v1.Health/Watch": {anonymous: true},
	"/grpc.health.v1.Health/List":  {anonymous: true},
}

// newToken names the token a Bootstrap or TokenCreate made: its accessor
// id, never its secret.
func newToken(_, resp any) string {
	if t, ok := resp.(*registryv1.ACLTokenSecret); ok && t != nil {
		return "token/" + t.AccessorId
	}
	return "token"
}

// authorize resolves the caller of method and checks its start rule. It
// returns the context carrying the identity and the rule.
func (s *Server) authorize(ctx context.Context, method string) (context.Context, rule, error) {
	r, ok := rules[method]
	if !ok {
		return ctx, r, fmt.Errorf("%w: method %s is not in the ACL table", acl.ErrPermissionDenied, method)
	}
	if r.anonymous {
		return ctx, r, nil
	}
	header := incomingAuthorization(ctx)
	id, err := s.resolver.ResolveHeader(header)
	if err != nil {
		return ctx, r, err
	}
	ctx = context.WithValue(ctx, callerKey{}, &caller{header: header, accessor: id.AccessorID, resolver: s.resolver})
	if r.start != nil {
		if err := r.start(id.Authz).Err(); err != nil {
			return ctx, r, err
		}
	}
	return ctx, r, nil
}

// check resolves the caller again and runs r's per-message rule on req.
func (r rule) check(ctx context.Context, req any) error {
	id, on, err := identityFrom(ctx)
	if !on || err != nil {
		return err
	}
	if r.each == nil {
		return nil
	}
	return r.each(id.Authz, req)
}

// UnaryInterceptor enforces the ACL rules on unary calls and writes the
// audit lines. The node installs it when ACLs are enabled.
func (s *Server) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, r, err := s.authorize(ctx, info.FullMethod)
		if err == nil {
			err = r.check(ctx, req)
		}
		var resp any
		if err != nil {
			err = s.toStatus(err)
		} else {
			resp, err = handler(ctx, req)
		}
		if r.audit != nil {
			s.audit(ctx, info.FullMethod, r.audit(req, resp), err)
		}
		return resp, err
	}
}

// StreamInterceptor enforces the ACL rules on streams: the start rule when
// the stream opens, the per-message rule on every message received.
func (s *Server) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, r, err := s.authorize(ss.Context(), info.FullMethod)
		if err == nil {
			err = handler(srv, &checkedStream{ServerStream: ss, ctx: ctx, rule: r, s: s})
		} else {
			err = s.toStatus(err)
		}
		if r.audit != nil {
			s.audit(ctx, info.FullMethod, "", err)
		}
		return err
	}
}

// checkedStream checks every message received against its rule.
type checkedStream struct {
	grpc.ServerStream
	ctx  context.Context
	rule rule
	s    *Server
}

func (c *checkedStream) Context() context.Context { return c.ctx }

func (c *checkedStream) RecvMsg(m any) error {
	if err := c.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := c.rule.check(c.ctx, m); err != nil {
		return c.s.toStatus(err)
	}
	return nil
}

// audit writes one line for a write or admin call: who (accessor id, never
// the secret), from where, what, on what, and the result code.
func (s *Server) audit(ctx context.Context, method, target string, err error) {
	accessor := "anonymous"
	if c, ok := ctx.Value(callerKey{}).(*caller); ok {
		accessor = c.accessor
	}
	addr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	attrs := []any{
		slog.Bool("audit", true),
		slog.String("accessor_id", accessor),
		slog.String("peer", addr),
		slog.String("method", method),
		slog.String("target", target),
		slog.String("code", status.Code(err).String()),
	}
	if forwarded(ctx) {
		attrs = append(attrs, slog.Bool("forwarded", true))
	}
	s.auditLog.Info("audit", attrs...)
}
