// Package consulapi serves a documented subset of Consul's HTTP API
// (agent service registration and TTL checks, catalog, health, status)
// over the registry, so that Consul clients, Prometheus's consul_sd_configs
// and the like work against it unchanged.
//
// It is a thin adapter. Every call goes through the node's own gRPC server
// on Config.Conn, with the caller's token as "authorization: Bearer" and
// the node's gateway metadata (the caller's address), so validation, ACLs,
// forwarding to the leader, the beat group commit and the per-client rate
// and watch limits are exactly those of gRPC. Blocking queries wait on a
// Registry.Watch of the same connection. Only /v1/status/* and the
// datacenter in /v1/agent/self are read from the local node (Cluster), as
// Consul serves them without ACLs.
//
// The mapping (README, "Consul-compatible API"):
//
//   - A Consul service is one registry instance: Name → service, ID
//     (default Name) → id, Address:Port → address (an empty Address takes
//     the caller's IP address, the "agent address" of a client that
//     registers itself), Meta → metadata, Tags → metadata "consul.tags"
//     (comma-joined; a tag with a comma is refused). Keys starting with
//     "consul." are reserved.
//   - One TTL check T: beat interval T/3, suspect after 2T/3 (Consul
//     "warning"), critical once no pass came for T, removed after
//     T + DeregisterCriticalServiceAfter (T when unset: the registry always
//     removes what stops beating). No check: the registry's default timing.
//     The check id is "service:<ID>" unless CheckID names another.
//   - The agent is the whole registry: /v1/agent/services and
//     /v1/agent/checks list every instance the token may read, and a pass
//     or deregister finds an ID through any node (what this node registered
//     or found before, else a scan of every service, then remembered).
//   - Blocking queries: ?index=N waits on a Watch after N (capped, with
//     Consul's jitter); an N past the registry's index answers at once.
//   - A pass (or an update with Status passing) is one Registry.Beat; warn,
//     fail and other statuses are accepted and send nothing.
//   - HEALTHY → passing, SUSPECT → warning, SUSPECT for a whole check TTL
//     (3 beat intervals) → critical.
//
// Concurrency: Server is an http.Handler safe for concurrent use. It owns
// no goroutines; a blocking query's watch ends with its request.
package consulapi
