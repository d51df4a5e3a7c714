package dnsserver

import (
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the DNS server's counters.
type Metrics struct {
	queries  *prometheus.CounterVec
	duration prometheus.Histogram
}

// NewMetrics returns the server's metrics, registered with reg if it is
// not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "registry_dns_queries_total",
			Help: "DNS queries answered, by question type (A, AAAA, SRV, SOA, NS, ANY or other) and response code (NOERROR, NXDOMAIN, REFUSED, SERVFAIL, ...).",
		}, []string{"qtype", "rcode"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "registry_dns_query_duration_seconds",
			Help:    "Time to answer a DNS query, from its parsed message to the reply written.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.queries, m.duration)
	}
	return m
}

// qtypeLabel keeps the qtype label to a few values.
func qtypeLabel(t uint16) string {
	switch t {
	case dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeSOA, dns.TypeNS, dns.TypeANY:
		return dns.TypeToString[t]
	}
	return "other"
}

func rcodeLabel(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return "other"
}
