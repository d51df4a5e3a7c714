// Package udpbeat is the UDP beat protocol: a one-way datagram that renews
// one registered instance, authenticated by an HMAC-SHA256 under a key that
// belongs to that registration alone, so that the simplest senders (a
// script, a small device) can keep an instance alive without gRPC, HTTP or
// a token. It owns the wire format (Parse, Append, Verify, the reply frame),
// the key derivation (DeriveKey, NewSecret) and the node's receiver
// (Server), which hands authenticated beats to the beat group commit.
//
// # Keys
//
// Register (gRPC, or PUT /v1/services/{service}/instances/{id} over HTTP,
// where the bytes are base64 in "beat_key"; registryctl register prints it)
// returns beat_key: 32 bytes, the key of that registration:
//
//	beat_key = HMAC-SHA256(cluster beat secret,
//	    "registry udp beat key v1" 0x00 u8 len(service) service u8 len(id) id u64be incarnation)
//
// The cluster beat secret is 32 random bytes that the first leader to need
// it generates (crypto/rand, at the proposer, never in Apply) and
// replicates through Raft (fsm command BeatSecretSet; the first one applied
// wins). Every node can therefore derive and check every key, a sender
// holds only its own, and a new incarnation gets a new key. The secret is
// never returned by any read API and never logged; it sits in the Raft log
// and in the snapshots on every node's disk, as the ACL token hashes do,
// and in backups (Cluster.SnapshotSave, operator:write), so that a restore
// keeps the keys handed out valid; those files are to be protected like
// the nodes' TLS keys. A sender
// needs no derivation: it uses beat_key as it was returned.
//
// Permission: with ACLs on, a Beat needs service write on the service. A
// datagram has no token; its MAC is its permission, because only a
// Register that had service write was given the key. Revoking a token does
// not revoke keys already handed out: deregister the instance, or register
// a new incarnation, to do that.
//
// # Datagram (sender to node), version 1
//
// All integers are unsigned and big-endian (network order). Names are the
// registration's service and id, ASCII, 1 to 128 bytes each (the rules of
// package validate: [A-Za-z0-9._:-]).
//
//	offset    size  field
//	0         1     version: 1
//	1         1     flags: 0x01 = send me a reply frame; every other bit 0
//	2         1     S = length of service
//	3         S     service
//	3+S       1     I = length of id
//	4+S       I     id
//	4+S+I     8     incarnation (as registered; at most 2^53-1)
//	12+S+I    8     seq: at least 1, strictly increasing per beat key
//	20+S+I    32    tag = HMAC-SHA256(beat_key, bytes 0 .. 20+S+I-1)
//
// The datagram is 52+S+I bytes (54 to 308), and exactly that: a datagram
// with trailing bytes is malformed. Example: service "orders", id "a1",
// incarnation 7, seq 1, no reply: 01 00 06 6f7264657273 02 6131
// 0000000000000007 0000000000000001, then the 32-byte tag of those 28
// bytes (format_test.go holds this datagram, tag included, under a test
// key, and a key derivation vector).
//
// seq is the replay defence. The node commits it with the beat, and the
// replicated state applies a UDP beat only if its seq is greater than the
// last one applied to that incarnation: a replayed datagram (to the same
// node, to another node, after a leader change, after a snapshot) is
// rejected as a replay and changes nothing. A sender that cannot keep a
// counter across restarts uses the time: the example sender
// (examples/udp-beat.py) sends max(last+1, Unix time in microseconds).
// Datagrams reordered in the network arrive as replays and are dropped; the
// next beat renews the instance.
//
// # Reply frame (node to sender), version 1
//
// Sent only when the datagram asked for it (flags 0x01) and only for a
// datagram whose MAC was good, to the address it came from. It is 51 bytes,
// smaller than any datagram, so it never amplifies.
//
//	offset  size  field
//	0       1     version: 1
//	1       1     0x80 (marks a reply; never set in a datagram)
//	2       1     status: 0 APPLIED (committed; the instance is registered),
//	              1 UNKNOWN (not registered: register again),
//	              2 FENCED (another incarnation is registered, see current),
//	              3 REPLAY (seq not above the last one applied),
//	              4 RETRY (not committed now: no leader, a full queue)
//	3       8     seq of the datagram answered
//	11      8     current: the registered incarnation for FENCED, else 0
//	19      32    tag = HMAC-SHA256(beat_key, bytes 0..18)
//
// A sender checks the tag before believing a reply.
//
// # The receiver
//
// Server reads datagrams from one socket (node flag --udp-beat-addr) and
// checks each, cheapest first: the per-source rate (Config.SourceRate),
// the layout (Parse), the MAC (the key derived from the replica's secret),
// and an early replay check against the local replica. It queues the
// authenticated ones (a bounded queue, Config.QueueSize) for Workers
// goroutines that submit them in batches to the same group commit as gRPC
// beats (rpc.Server.UDPBeats): no Raft entry of their own. A follower
// forwards them to the leader as the datagrams themselves
// (Registry.ForwardUdpBeats), and the leader checks every MAC again. The
// metrics count datagrams accepted (committed and applied) and rejected by
// reason; every goroutine is stopped by Close.
package udpbeat
