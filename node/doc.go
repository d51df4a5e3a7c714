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
// Goroutines: New starts the gRPC and HTTP servers, the leadership loop
// (which owns at most one set of leader duties at a time) and the address
// publisher. Shutdown stops all of them and waits; after it returns no
// goroutine of the node is left.
package node
