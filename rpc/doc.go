// Package rpc implements the registry's gRPC services, registry.v1.Registry,
// registry.v1.Cluster and registry.v1.ACL, on top of small interfaces that
// the node package implements: an Applier that proposes commands through the
// local Raft, a Leadership that knows the leader (to route calls), an Admin that
// changes membership and reports the node's Status (a domain struct that
// rpc converts to the API's StatusResponse), and a StateReader over the
// local replica (the fsm).
//
// Any node accepts any call. A follower forwards writes, DEFAULT and
// LINEARIZABLE reads and membership changes to the leader, once: a request
// that was already forwarded is never forwarded again. Beats are
// group-committed (package groupcommit): concurrent beats share one Raft
// entry on the leader, and a follower gathers them into one forwarded call.
// Registers and Deregisters are group-committed on the leader too
// (writes.go): concurrent ones share one WriteBatch entry, a lone one is
// proposed at once as its own command, and each caller gets its own
// result or error; a follower gathers them the same way and forwards each
// batch in one ForwardWrites call per caller token (forwardwrites.go).
// Watches are served by every node from its own replica; the watches of
// one service share one encoding of each change (watch.go), and a watcher
// that falls behind the bounded history gets an explicit reset.
// WatchMany (watchmux.go) carries many watches on one stream with two
// goroutines whatever their number: the watches of a service at one index
// form a group served by one read of the history and one message naming
// them all, whose events are the bytes Watch streams share.
//
// UDP beats (udpbeats.go, package udpbeat) join the same group commit
// through UDPBeats, with their sequence numbers, which the fsm's replay
// rule checks; a follower forwards them as the datagrams themselves
// (ForwardUdpBeats, no token: the leader checks every MAC again). Register
// proposes the cluster beat secret the first time it is missing and
// returns the registration's beat key.
//
// Requests are validated (package validate) before anything is proposed;
// every error leaves through one mapping, toStatus.
//
// Per client (ratelimit.go): writes are rate-limited (a Register,
// Deregister, Beat call or BeatStream frame is one write), answered
// RESOURCE_EXHAUSTED with a RetryInfo, and watches are counted. A client
// is the accessor id of its ACL token when the node enforces ACLs (the
// token the interceptor resolved), its address otherwise. A call is
// counted where the client reached the cluster: one forwarded by a member
// is not counted again, and one from the node's own HTTP gateway is
// counted against the HTTP client's token, or its address (ClientAddrKey,
// believed only with the gateway's GatewayToken from a loopback peer). The
// limiters are an LRU of at most MaxClients clients, guarded by one mutex.
//
// Cluster.SnapshotSave streams the leader's state (after a read barrier) in
// the fsm's snapshot format; Cluster.SnapshotRestore reads a backup of at
// most validate.MaxSnapshotBytes and hands it to Cluster.RestoreSnapshot on
// the leader. Followers relay both streams to the leader.
//
// ACLs (auth.go): when the node enables them it installs UnaryInterceptor
// and StreamInterceptor, which resolve the bearer token from the local
// replica (Resolver, cached until the replica's ACL index moves) and check
// what the method needs in one table, rules, keyed by full method name; a
// method missing from it is denied. ListServices and Watch filter by the
// token's service read rules. Forwarded calls carry the caller's token; a
// follower forwards group-committed beats in one call per token. Write and
// admin calls write an audit line. The ACL service (aclapi.go) manages
// policies and tokens through Raft.
//
// Metrics (NewMetrics) count beats, watches and forwarded calls.
//
// A Server owns the goroutines of its streams and its beat batcher; Close
// ends the streams and stops them, and must be called before the gRPC
// server's GracefulStop, which otherwise waits for watches forever.
package rpc
