// Package node assembles one registry server: the Raft instance with its
// raft-boltdb log and stable store and file snapshots, the fsm, the gRPC
// services (package rpc) and the HTTP endpoint. It is importable so that
// integration tests and embedders can run a node in-process; the
// registry-node binary is a thin shell around it.
//
// The node implements the small interfaces rpc declares: rpc.Applier (the
// only code that calls raft.Apply) and rpc.Cluster (leadership, forwarding
// connections, linearizable read barriers, membership).
//
// The HTTP endpoint (--http-addr) serves /metrics (the node's own Prometheus
// registry: Go and process collectors, gRPC server metrics, the rpc
// package's and the node's metrics, a collector that reads Raft, the fsm and
// the checker at scrape time, and hashicorp/raft's go-metrics through their
// Prometheus sink), /healthz, /readyz, Prometheus HTTP service discovery
// (/v1/sd/prometheus), the web console (/ui/, console.go: package console's
// embedded page and its few endpoints) and the HTTP/JSON API: the grpc-gateway, which calls
// this node's own gRPC server so that HTTP calls are validated, forwarded
// and fail exactly as gRPC ones.
//
// Limits (limits.go, httpguard.go) bound what a client can take: open
// connections per listener, gRPC streams per connection and idle
// connections, HTTP read/write/idle timeouts (watches exempt), and on the
// HTTP API browser writes (Content-Type, Origin) and unknown Host names
// (DNS rebinding) are refused with 403.
//
// One clock stamps the commands this node proposes and times its checker
// (leaderClock, clock.go): Config.Clock, never below the latest leader
// timestamp applied, and moved onto the previous leader's time base when
// this node gains leadership, so that a leader whose clock is behind does
// not see the last beats in the future.
//
// With Config.TLS (tls.go) every port speaks TLS from one tlsutil.Source:
// gRPC and HTTP with the configured client authentication, Raft through a
// NetworkTransport over a TLS stream layer that accepts and dials only
// certificates naming tlsutil.ServerName, and the node's own gRPC clients
// (forwarding, joining, the HTTP gateway) with that same check. Cluster.Join
// takes only a node's certificate. Replaced files are read again by the
// Source (or ReloadTLS, on SIGHUP) and used by new connections.
//
// The Raft TCP transport is wrapped in raftnet.Transport (Config.PeerWait):
// a call to a peer that refuses connections waits, bounded, for it to
// listen again, so that hashicorp/raft's replication backoff does not hold
// a restarted peer's catch-up for seconds. The node ends those waits when
// it stops leading or a peer is removed (a Raft observer, startup.go) and
// before Raft's Shutdown, which waits for the goroutines that may be in
// them. startup.go also records the start-up steps of the node (bolt
// opened, snapshot restored, Raft started, first leader contact, first
// apply, caught up) as "startup step" log lines and registry_startup_seconds.
//
// Read replicas (replica.go) are hashicorp/raft non-voters: a node with
// Config.ReadReplica joins through AddNonvoter, serves what a follower
// serves and never votes or leads; Promote and Demote change a member's
// suffrage (Demote refuses the leader and fewer than three voters), and
// leadership is never handed to a non-voter.
//
// RestoreSnapshot installs a backup with raft's user restore; the fsm's
// OnRestore hook makes the expiry checker grant its failover grace again.
//
// Goroutines: New starts the gRPC and HTTP servers, the leadership loop
// (which owns at most one set of leader duties at a time), the address
// publisher and, with TLS, the Source's file watcher. Shutdown stops all of them and waits; after it returns no
// goroutine of the node is left.
package node
