package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/regcenter/registry/acl"
	"github.com/regcenter/registry/dnsserver"
)

// dnsState is the node's DNS interface (package dnsserver), when
// Config.DNS.Addr is set.
type dnsState struct {
	server  *dnsserver.Server
	metrics *dnsserver.Metrics
}

// registerDNSMetrics registers the DNS server's metrics on the node's
// registry when DNS is on.
func (n *Node) registerDNSMetrics(reg prometheus.Registerer) {
	if n.cfg.DNS.Enabled() {
		n.dns.metrics = dnsserver.NewMetrics(reg)
	}
}

// startDNS serves DNS from the node's replica when Config.DNS.Addr is set.
// With ACLs on, a query (which carries no token) reads what the anonymous
// identity may read: there is no anonymous token, so it is a token with no
// policies under the ACL default policy — under "deny" (the default) no
// service resolves, under "allow" every one does.
func (n *Node) startDNS() error {
	if !n.cfg.DNS.Enabled() {
		return nil
	}
	deps := dnsserver.Deps{
		State:   n.fsm,
		Logger:  n.log.With("component", "dns"),
		Metrics: n.dns.metrics,
	}
	if n.cfg.ACLEnabled {
		anonymous := acl.NewAuthorizer(n.aclDefault())
		deps.ReadAllowed = func(service string) bool { return anonymous.ServiceRead(service).Allowed() }
	}
	s, err := dnsserver.New(n.cfg.DNS, deps)
	if err != nil {
		return err
	}
	n.dns.server = s
	n.undo.add(n.stopDNS)
	n.log.Info("dns started", "dns_addr", s.Addr(), "domain", n.cfg.DNS.Domain)
	return nil
}

// stopDNS stops the DNS listeners and waits for their goroutines.
func (n *Node) stopDNS() {
	if n.dns.server == nil {
		return
	}
	if err := n.dns.server.Close(); err != nil {
		n.log.Warn("stopping dns", "error", err)
	}
}

// DNSAddr is the bound DNS address (UDP and TCP), or "" when DNS is off.
func (n *Node) DNSAddr() string {
	if n.dns.server == nil {
		return ""
	}
	return n.dns.server.Addr()
}
