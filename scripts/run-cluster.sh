#!/usr/bin/env bash
# Starts a three-node registry on 127.0.0.1 with data under ./data (or $DATA),
# prints the endpoints and stops all three cleanly on Ctrl-C (SIGTERM each,
# then waits for it).
set -euo pipefail
bin=${BIN:-bin/registry-node}
data=${DATA:-data}
peers="n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103"
pids=()

stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping: ${pids[*]}"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped"
}
trap stop INT TERM EXIT

for i in 1 2 3; do
  mkdir -p "$data/n$i"
  "$bin" --node-id "n$i" --data-dir "$data/n$i" \
    --raft-addr "127.0.0.1:710$i" --grpc-addr "127.0.0.1:700$i" --http-addr "127.0.0.1:720$i" \
    --bootstrap-peers "$peers" ${LOG_FORMAT:+--log-format "$LOG_FORMAT"} \
    2> >(sed -u "s/^/[n$i] /" >&2) &
  pids+=("$!")
done

cat <<MSG
registry: three nodes on 127.0.0.1 (data in $data/)
  n1  grpc 127.0.0.1:7001  http 127.0.0.1:7201  raft 127.0.0.1:7101
  n2  grpc 127.0.0.1:7002  http 127.0.0.1:7202  raft 127.0.0.1:7102
  n3  grpc 127.0.0.1:7003  http 127.0.0.1:7203  raft 127.0.0.1:7103
Ctrl-C stops all three.
MSG
wait
