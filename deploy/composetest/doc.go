// Package composetest tests the Docker deployment: the image built by
// `make image` and the three-node cluster of deploy/docker-compose.yml,
// driven from the host as an operator and a client would.
//
// The test starts the compose file as its own project (a unique -p name, its
// own ports on 127.0.0.1), whose nodes require mutual TLS with the files of
// deploy/secrets (make compose-secrets). It checks that every node refuses a
// plaintext client and a TLS client without a certificate, then, with the
// client certificate of deploy/secrets, registers 200 instances with the Go
// client, and
// injects faults with the docker CLI: it kills the leader's container and
// starts it again, disconnects a follower from the cluster's network for
// longer than the TTL, stops and starts the whole project, and pauses the
// leader. After each fault it checks, through the client's Watch and
// linearizable reads, that no instance was lost or falsely expired, and
// that every node converges to the same state.
//
// The project runs with the compose file's "replicas" profile (two read
// replicas, Raft non-voters) and testdata/small-snapshots.yml (the voters
// snapshot and compact their log after a few hundred entries). The test
// checks that each replica serves with STALE reads and a watch what was
// written through the voters; kills one (every write through the voters is
// acknowledged, every instance beats on without a Lost, and it catches up
// once started again); and cuts one off the network until the leader has
// compacted its log past the replica's last entry, then reconnects it: it
// must catch up by snapshot (its registry_raft_last_snapshot_index reaches
// the leader's) and converge with the voters. Every container, network
// and volume it creates is removed when it ends (`down -v`), also when it
// fails.
//
// It needs a Docker daemon and docker compose (v2) or docker-compose (v1 >=
// 1.28), so `go test ./...` skips it; run it with
//
//	make compose-test
//
// which builds the image and the certificates and sets
// REGISTRY_COMPOSE_TEST=1. Other variables:
// REGISTRY_IMAGE (the image to test, default regcenter/registry:dev),
// REGISTRY_COMPOSE_CMD ("docker compose" or "docker-compose"; default the
// first that works) and REGISTRY_COMPOSE_PROJECT (the project name; default
// a random one).
package composetest
