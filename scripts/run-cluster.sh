#!/usr/bin/env bash
# Starts a three-node registry on 127.0.0.1 with data under ./data (or $DATA),
# prints the endpoints and, on Ctrl-C, stops the nodes one at a time (SIGTERM
# by PID, then waits for it): the followers first, the leader last, so that no
# node is left trying to reach one that has gone (stopped all at once, or the
# leader first, they log a burst of Raft [ERROR] lines).
set -euo pipefail
bin=${BIN:-bin/registry-node}
data=${DATA:-data}
peers="n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103"
pids=()

# is_leader reports whether node i says it is the leader.
is_leader() {
  curl -s --max-time 1 "http://127.0.0.1:720$1/v1/cluster/status" 2>/dev/null | grep -q '"role":"leader"'
}

stop() {
  trap - INT TERM EXIT
  echo
  local followers=() leader=()
  for i in "${!pids[@]}"; do
    if is_leader $((i + 1)); then leader+=("${pids[i]}"); else followers+=("${pids[i]}"); fi
  done
  echo "stopping: followers ${followers[*]}, then the leader ${leader[*]:-(none)}"
  for pid in "${followers[@]}" "${leader[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  echo "stopped"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

# Like consul agent -dev: say first that this cluster is open to anyone
# who reaches 127.0.0.1 (make compose-up runs one with mTLS).
echo "dev mode: no TLS, no ACLs (see README, Security)"

# Job control puts each node in its own process group: Ctrl-C reaches this
# script, not the nodes (the script stops them in order); the log prefix
# ignores it, so that it outlives them.
set -m
for i in 1 2 3; do
  mkdir -p "$data/n$i"
  "$bin" --node-id "n$i" --data-dir "$data/n$i" \
    --raft-addr "127.0.0.1:710$i" --grpc-addr "127.0.0.1:700$i" --http-addr "127.0.0.1:720$i" \
    --bootstrap-peers "$peers" ${LOG_FORMAT:+--log-format "$LOG_FORMAT"} \
    2> >(trap '' INT; exec sed -u "s/^/[n$i] /" >&2) &
  pids+=("$!")
done

cat <<MSG
registry: three nodes on 127.0.0.1 (data in $data/)
  n1  grpc 127.0.0.1:7001  http 127.0.0.1:7201  raft 127.0.0.1:7101
  n2  grpc 127.0.0.1:7002  http 127.0.0.1:7202  raft 127.0.0.1:7102
  n3  grpc 127.0.0.1:7003  http 127.0.0.1:7203  raft 127.0.0.1:7103
Ctrl-C stops all three.
MSG
set +m
wait
