// Package dnsserver answers DNS queries (github.com/miekg/dns, over UDP and
// TCP on one port) from a node's own replica: it reads the state without a
// Raft round, so a follower answers with what it has applied.
//
// # Names
//
// Under the zone Config.Domain (default "registry."):
//
//   - <service>.service.<domain>. A and AAAA: the IP addresses of the
//     service's HEALTHY instances (one record per distinct address).
//     SRV: one record per HEALTHY instance (priority 1, weight 1, the
//     instance's port, target <id>.<service>.instance.<domain>.), with
//     the target's A or AAAA record in the additional section.
//   - <value>.<key>.<service>.service.<domain>. The same, for the HEALTHY
//     instances whose metadata key <key> has the value <value> (exact,
//     case-sensitive). A dot inside a key or value is written \. in the
//     query name.
//   - <id>.<service>.instance.<domain>. A, AAAA or SRV of one HEALTHY
//     instance.
//   - <domain>. SOA (and NS, answered empty).
//
// Service names and instance ids are matched byte for byte as they are
// sent (DNS compares names without regard to case; this registry's names
// are case-sensitive, and resolvers pass the case through). A name may
// hold dots: <service> is first taken as all the labels before "service";
// if no such service exists and there are three labels or more, the first
// two are the filter's value and key and the rest the service. Instance
// names try each split of the labels into <id>.<service>, shortest id
// first. A name with an empty label (an id such as "a..b") cannot be asked
// for.
//
// # Answers
//
//   - An unknown service or instance, or one the reader may not read:
//     NXDOMAIN with the zone's SOA in the authority section.
//   - A known service (or instance) with nothing to answer (no HEALTHY
//     instance, none matching the filter, no address of the asked family):
//     NOERROR with no answer and the SOA in the authority section.
//   - A name outside the zone, or a class other than IN: REFUSED. There is
//     no recursion.
//   - Records are shuffled per query; every TTL (and the SOA's negative
//     caching TTL) is Config.TTL, default 0.
//   - Over UDP the reply fits the client's EDNS0 buffer size (512 bytes
//     without EDNS0, at most 4096, which the reply's OPT record
//     advertises); what does not fit is left out and TC is set, and the
//     same query over TCP returns everything up to 65535 bytes.
//
// An instance whose address is a host name rather than an IP has no A or
// AAAA record in a service's answer (an RRset cannot mix addresses with a
// CNAME); its SRV record is answered, with a CNAME from its target to the
// host name in the additional section, and its instance name answers a
// CNAME to the host name. An instance whose target name is not a valid DNS
// name (a label over 63 bytes, an empty label, or more than 255 bytes in
// all) is left out of SRV answers.
//
// # ACLs
//
// Queries carry no token. When Deps.ReadAllowed is set (ACLs on), a service
// the anonymous reader may not read is answered as if it did not exist.
//
// # Bounds and concurrency
//
// Queries are parsed by miekg/dns (one question; other messages get FORMERR
// or NOTIMP). At most Config.MaxInflight queries are answered at once (more
// get SERVFAIL), at most Config.MaxTCPConns TCP connections are open, and
// the records one reply builds are capped by its size. A Server owns the
// goroutines of its two listeners; Close stops them and waits.
package dnsserver
