package main

import (
	"flag"

	"github.com/regcenter/registry/dnsserver"
)

// addDNSFlags adds --dns-addr, --dns-domain and --dns-ttl; the defaults
// are d's (node.DefaultConfig().DNS).
func addDNSFlags(fs *flag.FlagSet, str func(p *string, name, def, usage string), c *dnsserver.Config, d dnsserver.Config) {
	str(&c.Addr, "dns-addr", d.Addr, "address (host:port, UDP and TCP) to answer DNS queries on from this node's replica, e.g. 127.0.0.1:8600; empty (the default) turns DNS off")
	str(&c.Domain, "dns-domain", d.Domain, "the DNS zone answered: <service>.service.<domain>, <id>.<service>.instance.<domain>")
	fs.DurationVar(&c.TTL, "dns-ttl", d.TTL, "TTL of DNS records, whole seconds; 0 makes resolvers ask again every time (env "+envName("dns-ttl")+")")
}
