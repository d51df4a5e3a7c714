#!/usr/bin/env bash
# Creates, where absent, the TLS files of the compose cluster in DIR
# (default deploy/secrets, git-ignored), with registryctl (make build):
#
#   registry-agent-ca.pem, registry-agent-ca-key.pem  the CA (the key never leaves DIR)
#   server-nN.pem, server-nN-key.pem                  node nN's certificate (n1-n5; names
#                                                     server.registry, nodeN, localhost, 127.0.0.1)
#   client.pem, client-key.pem                        a client's certificate (registryctl, the
#                                                     compose test, Prometheus)
#
#   deploy/compose-secrets.sh [REGISTRYCTL] [DIR]
#
# Existing files are kept, so running it again changes nothing; delete a
# file (or DIR) to have it made anew. The containers run as other users
# than the files' owner (the nodes as 65532, Prometheus as nobody) and read
# DIR through a bind mount, so the certificates' keys are made readable by
# all (0644) and DIR searchable: this is for a cluster on one machine. The
# CA's key stays 0600.
set -euo pipefail
ctl=${1:-bin/registryctl}
dir=${2:-deploy/secrets}
nodes=(n1 n2 n3 n4 n5) # node4 and node5: deploy/docker-compose.five.yml

mkdir -p "$dir"
chmod 0755 "$dir"
made=()
if [ ! -e "$dir/registry-agent-ca.pem" ]; then
  "$ctl" tls ca create --dir "$dir" >/dev/null
  made+=(registry-agent-ca.pem)
fi
for n in "${nodes[@]}"; do
  if [ ! -e "$dir/server-$n.pem" ]; then
    # The compose service name (node1 for n1): the nodes dial each other
    # and Prometheus scrapes them by it.
    "$ctl" tls cert create --server --node "$n" --dns "node${n#n}" --dir "$dir" >/dev/null
    made+=("server-$n.pem")
  fi
  chmod 0644 "$dir/server-$n-key.pem"
done
if [ ! -e "$dir/client.pem" ]; then
  "$ctl" tls cert create --client --dir "$dir" >/dev/null
  made+=(client.pem)
fi
chmod 0644 "$dir/client-key.pem"
# ACLs (issue 13): the bootstrap token of the compose cluster will be made
# here too, as $dir/bootstrap-token, where absent.

if [ "${#made[@]}" -gt 0 ]; then
  echo "compose secrets: created ${made[*]} in $dir"
else
  echo "compose secrets: $dir holds the CA, the nodes' and the client's certificates (kept)"
fi
