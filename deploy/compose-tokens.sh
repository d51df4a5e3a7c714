#!/usr/bin/env bash
# Creates, where absent or no longer valid, the ACL token that the compose
# cluster's Prometheus (profile "monitoring") discovers services with:
# a policy "prometheus" (deploy/monitoring/prometheus-policy.hcl: read every
# service) and a token holding it, whose secret goes to DIR/prometheus-token.
# It runs against the running cluster with the management token of
# DIR/management-token (make compose-up runs it once the nodes are ready).
#
#   deploy/compose-tokens.sh REGISTRYCTL DIR ENDPOINTS
#
# A kept token is checked first (a cluster made anew, e.g. after
# compose-down VOLUMES=1, does not know it): only an unknown one is
# replaced. Prometheus reads the file at every discovery, so a new token
# takes effect without a restart. No secret is printed.
set -euo pipefail
ctl=${1:?usage: compose-tokens.sh REGISTRYCTL DIR ENDPOINTS}
dir=${2:?usage: compose-tokens.sh REGISTRYCTL DIR ENDPOINTS}
eps=${3:?usage: compose-tokens.sh REGISTRYCTL DIR ENDPOINTS}
here=$(cd "$(dirname "$0")" && pwd)

export REGISTRY_ENDPOINTS=$eps REGISTRY_CACERT=$dir/registry-agent-ca.pem \
  REGISTRY_CERT=$dir/client.pem REGISTRY_KEY=$dir/client-key.pem

if [ -s "$dir/prometheus-token" ] &&
  REGISTRY_TOKEN=$(cat "$dir/prometheus-token") "$ctl" services >/dev/null 2>&1; then
  echo "compose tokens: $dir/prometheus-token is a token of this cluster (kept)"
  exit 0
fi

REGISTRY_TOKEN=$(cat "$dir/management-token")
export REGISTRY_TOKEN
"$ctl" acl policy create --name prometheus --rules "$here/monitoring/prometheus-policy.hcl" >/dev/null
out=$("$ctl" -o json acl token create --policy prometheus --description "Prometheus of the compose cluster (service discovery)")
secret=$(printf '%s\n' "$out" | sed -n 's/.*"secret_id": *"\([^"]*\)".*/\1/p')
if [ -z "$secret" ]; then
  echo "compose tokens: registryctl acl token create printed no secret_id" >&2
  exit 1
fi
umask 022 # Prometheus runs as nobody and reads it through a bind mount
printf '%s\n' "$secret" >"$dir/prometheus-token.tmp"
mv "$dir/prometheus-token.tmp" "$dir/prometheus-token"
# A node knows the token once it has applied its creation: wait until the
# first endpoint answers it (at most 10 s), so that the next run keeps it.
deadline=$((SECONDS + 10))
until REGISTRY_TOKEN=$secret "$ctl" services >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    echo "compose tokens: the new token is not answered after 10 s" >&2
    exit 1
  fi
  sleep 0.2
done
echo "compose tokens: created $dir/prometheus-token (policy prometheus: read every service)"
