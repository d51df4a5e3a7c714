// Package client is the Go client of the registry: it registers instances
// and keeps them alive, discovers and watches services, and resolves
// "registry:///service" targets for gRPC.
//
// Five lines register a service and find its peers:
//
//	c, err := client.New(client.Config{Endpoints: []string{"127.0.0.1:7001", "127.0.0.1:7002"}})
//	defer c.Close()
//	reg, err := c.Register(ctx, client.Instance{Service: "orders", ID: "orders-1",
//		Address: "127.0.0.5:8080", Metadata: map[string]string{"zone": "a"}},
//		client.WithBeatInterval(time.Second), client.WithTTL(5*time.Second))
//	defer reg.Deregister(ctx)
//	insts, err := c.Discover(ctx, "orders")       // []client.Instance, healthy ones
//	events, err := c.Watch(ctx, "orders")         // <-chan client.Event, until ctx ends
//	conn, err := grpc.NewClient("registry:///orders", grpc.WithResolvers(c.Resolver()), ...)
//
// Against nodes that run TLS (registry-node --tls-*), set Config.CAFile,
// CertFile and KeyFile (files from registryctl tls cert create --client), or
// Config.TLS.
//
// After that the application need not think about the registry again:
//
//   - Beats: one BeatStream per Client carries the beats of all its
//     registrations, each at its own interval (or the longer one the server
//     recommends when it is loaded). gRPC keepalive pings detect dead
//     links; a broken or stalled stream is reopened on another node. A
//     frame the node could not commit because of leadership (answered with
//     a BeatRetry) is resent on the same stream after a backoff: a leader
//     change costs a resend, not a reconnect.
//   - Failover: calls and streams move to another endpoint, chosen at
//     random so that clients losing the same node spread out, after a
//     capped full-jitter exponential backoff. Writes follow the leader hint
//     of an UNAVAILABLE answer. A write or a beat stream refused
//     RESOURCE_EXHAUSTED with a google.rpc.RetryInfo (over the client's
//     write rate) instead waits the delay the node asked for (at most 30 s,
//     and never past the call's context) and tries the same node again.
//   - Re-registration: a beat answered "unknown" (the instance expired while
//     the client was cut off, or the cluster was restored from a backup)
//     registers the instance again with a higher incarnation after a
//     jittered delay of at most half its interval. Registration.Events
//     tells the application: registered, lost (no acknowledged beat for
//     suspect_after), reacquired, reregistered, deregistered.
//   - Discovery: the first Discover of a service starts a watch; later
//     calls answer from the watched cache. The cache resumes after a
//     reconnect from its last index, applies resets, and does not empty a
//     service unless the leader confirms it.
//   - Watch: every change exactly once, in index order, across node
//     failures, or an explicit reset event.
//   - Spread: a Client's watches (Watch and the caches' watches) do not
//     pile on one node: each new one starts on the next read endpoint
//     (Config.ReadEndpoints, else Endpoints) in turn, and each moves on its
//     own when its node fails, so a dead node's watches spread over the
//     others. Writes and beats keep to one endpoint of Endpoints.
//
// # Concurrency
//
// A Client is safe for concurrent use. It owns its goroutines (the beat
// stream, one watch per cached service, one per Watch, re-registrations)
// and Close stops them all and closes its connections.
//
// The package depends on the public API only (api/registryv1, the
// validate limits and tlsutil, which imports only the standard library),
// never on the server's packages.
package client
