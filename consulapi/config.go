package consulapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/regcenter/registry/internal/defaults"
	"github.com/regcenter/registry/validate"
)

// Cluster is what the API reads from the local node rather than through
// gRPC: what Consul serves without ACLs (/v1/status/*) and the answering
// node's own view (its id, how long since it heard from the leader).
type Cluster interface {
	// NodeID is the answering node's id: the Consul "Node" name.
	NodeID() string
	// LeaderRaftAddr is the leader's Raft address, "" if none is known.
	LeaderRaftAddr() string
	// Peers are the voters' Raft addresses.
	Peers() []string
	// LastContact is the time since this node last heard from the leader;
	// zero on the leader.
	LastContact() time.Duration
	// AppliedIndex is the last Raft index this node's replica applied.
	AppliedIndex() uint64
}

// Config configures a Server. Conn, CallMetadata and Cluster are required;
// zero fields of the rest take DefaultConfig's values.
type Config struct {
	// Conn is a client connection to the node's own gRPC server.
	Conn grpc.ClientConnInterface
	// CallMetadata is added to every gRPC call made for an HTTP request:
	// the node's gateway metadata (the caller's address and the gateway
	// token). The caller's ACL token is added separately.
	CallMetadata func(*http.Request) metadata.MD
	// Cluster is the local node.
	Cluster Cluster
	// Datacenter is the one datacenter this API answers for.
	Datacenter string
	// DefaultWait is a blocking query's wait when ?wait is not given;
	// MaxWait caps ?wait. A wait is then extended by a random jitter of up
	// to a sixteenth of itself, as Consul does.
	DefaultWait time.Duration
	MaxWait     time.Duration
	// WriteTimeout is the HTTP server's write timeout; a blocking query
	// extends its own deadline to its wait plus this.
	WriteTimeout time.Duration
	// Clock reads the time for the critical state (no pass for a check's
	// TTL); default time.Now.
	Clock func() time.Time
	// Logger defaults to discarding. Tokens are never logged.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: Consul's datacenter "dc1", waits of
// 5 minutes by default and 10 at most (Consul's), a 30 s write timeout.
func DefaultConfig() Config {
	return Config{
		Datacenter:   "dc1",
		DefaultWait:  5 * time.Minute,
		MaxWait:      10 * time.Minute,
		WriteTimeout: 30 * time.Second,
		Clock:        time.Now,
		Logger:       slog.New(slog.DiscardHandler),
	}
}

// WithDefaults returns c with each zero field set from DefaultConfig.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	defaults.Set(&c.Datacenter, d.Datacenter)
	defaults.Set(&c.DefaultWait, d.DefaultWait)
	defaults.Set(&c.MaxWait, d.MaxWait)
	defaults.Set(&c.WriteTimeout, d.WriteTimeout)
	defaults.Set(&c.Logger, d.Logger)
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	return c
}

// Validate reports every setting that cannot work, joined.
func (c *Config) Validate() error {
	var errs []error
	if c.Conn == nil || c.CallMetadata == nil || c.Cluster == nil {
		errs = append(errs, errors.New("consul api: Conn, CallMetadata and Cluster are required"))
	}
	if err := validate.Name("consul datacenter", c.Datacenter); err != nil {
		errs = append(errs, err)
	}
	if c.DefaultWait <= 0 || c.MaxWait < c.DefaultWait {
		errs = append(errs, fmt.Errorf("consul api: default wait (%v) must be positive and not above max wait (%v)", c.DefaultWait, c.MaxWait))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, fmt.Errorf("consul api: write timeout (%v) must be positive", c.WriteTimeout))
	}
	return errors.Join(errs...)
}
