#!/usr/bin/env bash
# Creates, where absent, the TLS files of the compose cluster in DIR
# (default deploy/secrets, git-ignored), with registryctl (make build):
#
#   registry-agent-ca.pem, registry-agent-ca-key.pem  the CA (the key never leaves DIR)
#   server-nN.pem, server-nN-key.pem                  node nN's certificate (n1-n5; names
#                                                     server.registry, nodeN, localhost, 127.0.0.1)
#   client.pem, client-key.pem                        a client's certificate (registryctl, the
#                                                     compose test, Prometheus)
#   management-token                                  the secret of the cluster's first ACL
#                                                     management token: the nodes bootstrap the
#                                                     ACLs with it (--acl-initial-management-
#                                                     token-file) and send it on their own calls
#                                                     (--acl-token-file); registryctl --token
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
# The management token's secret: 128 random bits as a UUID-shaped string
# (the format of the secrets the nodes make). Readable by the nodes (0644,
# see above); it grants everything, so keep DIR to yourself.
if [ ! -e "$dir/management-token" ]; then
  hex=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  printf '%s-%s-%s-%s-%s\n' "${hex:0:8}" "${hex:8:4}" "${hex:12:4}" "${hex:16:4}" "${hex:20:12}" >"$dir/management-token.tmp"
  mv "$dir/management-token.tmp" "$dir/management-token"
  made+=(management-token)
fi
chmod 0644 "$dir/management-token"

if [ "${#made[@]}" -gt 0 ]; then
  echo "compose secrets: created ${made[*]} in $dir"
else
  echo "compose secrets: $dir holds the CA, the nodes' and the client's certificates and the management token (kept)"
fi
