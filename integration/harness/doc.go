// Package harness runs registry-node as real operating-system processes for
// integration, fault-injection and benchmark tests.
//
// # What it owns
//
// [Build] compiles ./cmd/registry-node once per test binary. [Start] starts a
// cluster of nodes on one loopback IP of its own (127.a.b.c, never 127.0.0.1)
// with fixed ports below the kernel's ephemeral range (gRPC 17001+i, Raft
// 17101+i, HTTP 17201+i; with Options.Interfaces also DNS 17301+i, Consul
// API 17401+i, UDP beats 17501+i), so the address list is known before any process
// starts and concurrently running test packages do not collide. Each node has
// its own data directory and log file under t.TempDir(); when the test fails,
// the tail of every node's log is printed with t.Log.
//
// A [Node] is one node identity (id, addresses, data directory, flags) across
// any number of processes: [Node.Kill], [Node.Stop], [Node.Pause],
// [Node.Resume] and [Node.Restart] act on the current process by its pid.
//
// # Faults
//
// With Options.FaultInjection every node runs with the test-only
// --test-fault-injection flag: its Raft transport is wrapped (package
// node/faultinject) and its HTTP address serves POST /debug/faults.
// [Cluster.Partition], [Cluster.Isolate] and [Cluster.Heal] cut and restore
// Raft links in both directions; [Node.SetFaults] sets one node's blocked
// peers per direction. Only Raft traffic is cut: clients still reach every
// node, and nodes still forward to each other over gRPC. A restarted node
// starts healed ([Cluster.ReapplyFaults]). Options.ClockOffsets runs nodes
// with --test-clock-offset, a clock ahead or behind for the time they stamp
// and expire by; [Cluster.TransferLeadership] makes such a node lead.
//
// # Membership
//
// [Cluster.AddNode] starts one more node on a spare port slot
// (Options.Spare) with --join, and waits until it is a voter everywhere;
// [Cluster.RemoveNode] removes a node (the leader too) with
// Cluster.Remove, stops its process and takes it out of Nodes. Both change
// the node list: call them from the test goroutine.
//
// # Security
//
// With Options.TLS the cluster has a CA of its own ([Cluster.CA]); every
// node gets a node certificate of it and every harness connection, gRPC
// and HTTP ([Cluster.HTTPClient], [Node.HTTPURL]; the fault control calls
// too), presents a client certificate. [Node.RotateCertificate] replaces a
// node's files; [Cluster.StartOutsider] starts a node of another CA that
// tries to join. With Options.ACL the nodes run with --acl-enabled and the
// harness's management secret as their --acl-token; the harness
// bootstraps the ACLs with that chosen secret once a leader exists (before
// it waits for the nodes to answer Status, which needs operator:read), and
// every connection it makes carries the token ([Cluster.ManagementToken];
// [Node.DialToken] dials with another token or none).
//
// # Clients
//
// [Beater] keeps instances alive the way a client library does (a Beat call
// per lane per tick with the instances that are due, failing over to the
// next node on error) and records, per instance, the local time of its last
// acknowledged beat; [Beater.Halt] makes instances "die". [EventRecorder]
// watches every service, fails over to the next node resuming after the last
// index it received, and records every event with its local receive time
// and every reset with the instances it shows were removed unseen. Both own
// their goroutines and connections; a t.Cleanup stops them before the
// cluster's.
//
// # Process lifetime
//
// Processes are started and signalled by package internal/proc, the launcher
// registry-bench uses too. Every process the harness starts is stopped by a
// t.Cleanup (SIGTERM, then SIGKILL after Options.StopTimeout), also when the
// test fails or panics. On Linux each process is also started with
// PR_SET_PDEATHSIG=SIGKILL from a dedicated OS thread that lives as long as
// the test binary (proc.Spawn), so a node dies with the test binary even when
// no cleanup runs (a panic in a non-test goroutine, or the go test -timeout
// alarm).
//
// # Concurrency
//
// Node and Cluster methods are safe for concurrent use, so a fault-injection
// goroutine may kill and restart nodes while others send requests. The
// exceptions are the helpers that take a testing.TB ([Start], [Build]): like
// t.Fatal they must be called from the test goroutine.
//
// # Waiting
//
// Nothing in the harness sleeps for a fixed time to wait for a state: it polls
// a condition with a deadline (package internal/poll: poll.Until and, in
// tests, poll.Eventually; [Cluster.WaitLeader], [Cluster.WaitApplied],
// [Node.WaitReady]). [Poll] and [Eventually] forward to package poll for the
// callers not yet moved over.
//
// Packages that use the harness should remove the built binary when the test
// binary ends, for example from TestMain:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		harness.RemoveBuild()
//		os.Exit(code)
//	}
package harness
