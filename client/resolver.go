package client

import (
	"google.golang.org/grpc/resolver"
)

// Scheme is the gRPC resolver scheme of Resolver: "registry:///orders".
const Scheme = "registry"

// Resolver returns a gRPC resolver for the "registry" scheme that keeps a
// ClientConn's addresses equal to the HEALTHY instances of the service
// named in the target ("registry:///orders"), so that gRPC's own load
// balancing spreads calls over them:
//
//	conn, err := grpc.NewClient("registry:///orders", grpc.WithResolvers(c.Resolver()), ...)
func (c *Client) Resolver() resolver.Builder { return &resolverBuilder{c: c} }

type resolverBuilder struct{ c *Client }

func (b *resolverBuilder) Scheme() string { return Scheme }

func (b *resolverBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := target.Endpoint()
	if err := validateService(service); err != nil {
		return nil, err
	}
	ch, err := b.c.cacheFor(service)
	if err != nil {
		return nil, err
	}
	r := &registryResolver{}
	r.unsubscribe = ch.subscribe(func(ins []Instance) {
		addrs := make([]resolver.Address, len(ins))
		for i, in := range ins {
			addrs[i] = resolver.Address{Addr: in.Address}
		}
		// With no instance, gRPC fails calls with UNAVAILABLE until one
		// registers; the error only reports that.
		_ = cc.UpdateState(resolver.State{Addresses: addrs})
	})
	return r, nil
}

type registryResolver struct{ unsubscribe func() }

func (r *registryResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (r *registryResolver) Close()                                { r.unsubscribe() }
