# The ACL policy of the compose cluster's Prometheus (deploy/compose-tokens.sh):
# read every service, for service discovery (/v1/sd/prometheus lists only
# the instances of services the token may read). /metrics needs no token
# (the client certificate is enough), so nothing else is granted.
service_prefix "" {
  policy = "read"
}
