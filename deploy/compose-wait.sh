#!/usr/bin/env bash
# Waits until the nodes of a compose project of deploy/docker-compose.yml are
# healthy — each knows a leader and has caught up (/readyz, through the
# image's "registry-node health" check) — then prints their endpoints.
#
#   deploy/compose-wait.sh PROJECT [TIMEOUT_SECONDS]
#   SERVICES="node1 node2 node3 node4 node5" deploy/compose-wait.sh registry
#   SERVICES="node1 node2 node3 replica1 replica2" deploy/compose-wait.sh registry
#
# SERVICES defaults to node1 node2 node3 (nodeN has id nN, replicaN rN). Exits 1, with the nodes' states and
# the end of their logs, if they are not all healthy within the timeout
# (default 90 s).
set -euo pipefail
project=${1:?usage: compose-wait.sh PROJECT [TIMEOUT_SECONDS]}
timeout=${2:-90}
read -r -a services <<<"${SERVICES:-node1 node2 node3}"

container() {
  docker ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1"
}

deadline=$((SECONDS + timeout))
while :; do
  states=()
  ready=1
  for s in "${services[@]}"; do
    id=$(container "$s")
    st=missing
    [ -n "$id" ] && st=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
    [ "$st" = healthy ] || ready=0
    states+=("$s:$st")
  done
  [ "$ready" = 1 ] && break
  if ((SECONDS >= deadline)); then
    echo "the cluster is not ready after ${timeout}s: ${states[*]}" >&2
    for s in "${services[@]}"; do
      id=$(container "$s")
      [ -n "$id" ] || continue
      echo "--- $s" >&2
      docker logs --tail 20 "$id" 2>&1 | sed 's/^/  /' >&2
    done
    exit 1
  fi
  sleep 1
done

echo "registry: ${#services[@]} nodes in Docker (project $project) are ready: a leader is elected"
printf '  %-8s %-4s %-22s %s\n' node id gRPC HTTP
for s in "${services[@]}"; do
  id=$(container "$s")
  grpc=$(docker port "$id" 7001/tcp | head -n 1)
  http=$(docker port "$id" 7201/tcp | head -n 1)
  case $s in
  replica*) nid=r${s#replica} ;;
  *) nid=n${s#node} ;;
  esac
  printf '  %-8s %-4s %-22s %s\n' "$s" "$nid" "$grpc" "$http"
done
