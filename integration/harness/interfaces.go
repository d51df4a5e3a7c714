package harness

import (
	"io"
	"net"
)

// Fixed port bases of the client interfaces that Options.Interfaces turns
// on, like the others below the ephemeral range: node slot i (0-based) uses
// base+1+i. DNS takes its port over both UDP and TCP.
const (
	dnsPortBase     = 17300
	consulPortBase  = 17400
	udpBeatPortBase = 17500
)

// interfaceAddrs are a node's client interface addresses, "" unless
// Options.Interfaces.
type interfaceAddrs struct {
	dns, consul, udpBeat string
}

// interfaceArgs gives node n of slot its interface addresses and returns
// the flags that turn them on (none without Options.Interfaces).
func (c *Cluster) interfaceArgs(n *Node, slot int) []string {
	if !c.opts.Interfaces {
		return nil
	}
	n.ifaces = interfaceAddrs{
		dns:     hostPort(c.ip, dnsPortBase+1+slot),
		consul:  hostPort(c.ip, consulPortBase+1+slot),
		udpBeat: hostPort(c.ip, udpBeatPortBase+1+slot),
	}
	return []string{
		"--dns-addr=" + n.ifaces.dns,
		"--consul-addr=" + n.ifaces.consul,
		"--udp-beat-addr=" + n.ifaces.udpBeat,
	}
}

// DNSAddr is the host:port the node answers DNS on (UDP and TCP), or ""
// without Options.Interfaces.
func (n *Node) DNSAddr() string { return n.ifaces.dns }

// ConsulAddr is the host:port of the node's Consul-compatible HTTP API, or
// "" without Options.Interfaces.
func (n *Node) ConsulAddr() string { return n.ifaces.consul }

// UDPBeatAddr is the host:port the node takes UDP beats on, or "" without
// Options.Interfaces.
func (n *Node) UDPBeatAddr() string { return n.ifaces.udpBeat }

// interfacePortsFree reports whether the interface ports of nodes slots can
// be bound on ip right now (DNS over UDP and TCP, Consul over TCP, UDP
// beats over UDP). pickIP checks them whether or not a cluster turns the
// interfaces on: they are few, and a cluster's IP then suits either.
func interfacePortsFree(ip string, nodes int) bool {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for i := range nodes {
		for _, p := range []struct {
			network string
			base    int
		}{{"tcp", dnsPortBase}, {"udp", dnsPortBase}, {"tcp", consulPortBase}, {"udp", udpBeatPortBase}} {
			addr := hostPort(ip, p.base+1+i)
			if p.network == "tcp" {
				l, err := net.Listen("tcp", addr)
				if err != nil {
					return false
				}
				closers = append(closers, l)
				continue
			}
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return false
			}
			closers = append(closers, pc)
		}
	}
	return true
}
