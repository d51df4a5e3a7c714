package dnsserver

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/regcenter/registry/internal/defaults"
)

// MaxTTL bounds Config.TTL.
const MaxTTL = 24 * time.Hour

// Config configures a Server. Zero fields but Addr and TTL take
// DefaultConfig's values.
type Config struct {
	// Addr is the host:port the server binds for both UDP and TCP; empty
	// turns DNS off. With port 0 a free port is picked (the same for both).
	Addr string
	// Domain is the zone answered, e.g. "registry." (a trailing dot is
	// added; compared without regard to case).
	Domain string
	// TTL of every record, in whole seconds, 0 to MaxTTL. Default 0, so
	// that a resolver asks again every time, like Consul's service TTL.
	TTL time.Duration
	// MaxInflight bounds the queries answered at once; beyond it a query
	// is answered SERVFAIL.
	MaxInflight int
	// MaxTCPConns bounds the open TCP connections; beyond it a new one
	// waits in the kernel's accept queue.
	MaxTCPConns int
	// TCPIdleTimeout closes a TCP connection that sends nothing this long.
	TCPIdleTimeout time.Duration
}

// DefaultConfig returns the defaults: off, zone "registry.", TTL 0.
func DefaultConfig() Config {
	return Config{
		Domain:         "registry.",
		MaxInflight:    1024,
		MaxTCPConns:    256,
		TCPIdleTimeout: 8 * time.Second,
	}
}

// WithDefaults returns c with each zero field (but Addr and TTL, whose
// zeros mean off and 0 s) set from DefaultConfig, and Domain made a
// lower-case fully qualified name.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	defaults.Set(&c.Domain, d.Domain)
	defaults.Set(&c.MaxInflight, d.MaxInflight)
	defaults.Set(&c.MaxTCPConns, d.MaxTCPConns)
	defaults.Set(&c.TCPIdleTimeout, d.TCPIdleTimeout)
	c.Domain = dns.CanonicalName(c.Domain)
	return c
}

// Enabled reports whether DNS is on.
func (c Config) Enabled() bool { return c.Addr != "" }

// Validate reports every setting that cannot work, joined.
func (c Config) Validate() error {
	var errs []error
	if c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			errs = append(errs, fmt.Errorf("dns addr %q: %v", c.Addr, err))
		}
	}
	if _, ok := dns.IsDomainName(c.Domain); !ok || c.Domain == "." || strings.Contains(c.Domain, `\`) {
		errs = append(errs, fmt.Errorf("dns domain %q: is not a DNS name of at least one label (labels of 1-63 bytes, 255 bytes in all, no escapes)", c.Domain))
	}
	if c.TTL < 0 || c.TTL > MaxTTL || c.TTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("dns ttl %v: must be whole seconds from 0s to %v", c.TTL, MaxTTL))
	}
	if c.MaxInflight < 1 || c.MaxTCPConns < 1 || c.TCPIdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("dns limits: max inflight (%d) and max tcp conns (%d) must be at least 1 and the tcp idle timeout (%v) positive",
			c.MaxInflight, c.MaxTCPConns, c.TCPIdleTimeout))
	}
	return errors.Join(errs...)
}
