package tlsutil

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"
)

// Client authentication modes of the client-facing listeners.
const (
	ClientAuthRequire       = "require"         // a client must present a certificate from the CA
	ClientAuthVerifyIfGiven = "verify-if-given" // a certificate is optional; one given must verify
	ClientAuthNone          = "none"            // no client certificate is asked for
)

// Config names a node's TLS files. All three files or none: with none, TLS
// is off.
type Config struct {
	CertFile, KeyFile, CAFile string
	// ClientAuth is how the gRPC and HTTP listeners treat client
	// certificates: ClientAuthRequire (default), ClientAuthVerifyIfGiven or
	// ClientAuthNone. Node-to-node connections always require one.
	ClientAuth string
	// ReloadInterval is how often the files' sizes and modification times
	// are checked (default 5s); negative turns the checks off (Reload
	// only).
	ReloadInterval time.Duration
}

// DefaultConfig returns the defaults; TLS stays off until files are set.
func DefaultConfig() Config {
	return Config{ClientAuth: ClientAuthRequire, ReloadInterval: 5 * time.Second}
}

// WithDefaults returns c with each zero field set from DefaultConfig.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.ClientAuth == "" {
		c.ClientAuth = d.ClientAuth
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = d.ReloadInterval
	}
	return c
}

// Enabled reports whether any file is set.
func (c Config) Enabled() bool {
	return c.CertFile != "" || c.KeyFile != "" || c.CAFile != ""
}

// Validate checks that the files are all set or none, and the client
// authentication mode.
func (c Config) Validate() error {
	var errs []error
	if c.Enabled() && (c.CertFile == "" || c.KeyFile == "" || c.CAFile == "") {
		errs = append(errs, fmt.Errorf("tls: cert (%q), key (%q) and ca (%q) files: set all three or none", c.CertFile, c.KeyFile, c.CAFile))
	}
	if _, err := clientAuthType(c.ClientAuth); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func clientAuthType(mode string) (tls.ClientAuthType, error) {
	switch mode {
	case ClientAuthRequire, "":
		return tls.RequireAndVerifyClientCert, nil
	case ClientAuthVerifyIfGiven:
		return tls.VerifyClientCertIfGiven, nil
	case ClientAuthNone:
		return tls.NoClientCert, nil
	}
	return 0, fmt.Errorf("tls: client auth %q: want %s, %s or %s", mode, ClientAuthRequire, ClientAuthVerifyIfGiven, ClientAuthNone)
}
