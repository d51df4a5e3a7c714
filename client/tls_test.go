package client_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/regcenter/registry/client"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
	"github.com/regcenter/registry/tlsutil/tlstest"
)

func TestTheClientSpeaksTLSFromFilesOrAConfig(t *testing.T) {
	ca := tlstest.CA(t)
	serverFiles := tlstest.WriteFiles(t, t.TempDir(), ca, tlstest.Cert(t, ca, true))
	nd := nodetest.Single(t, func(cfg *node.Config) { cfg.TLS = serverFiles })
	clientCert := tlstest.Cert(t, ca, false)
	clientFiles := tlstest.WriteFiles(t, t.TempDir(), ca, clientCert)
	withTLS := tlstest.ClientConfig(t, ca, clientCert)
	withTLS.ServerName = "" // the client fills in tlsutil.ServerName

	for _, tc := range []struct {
		name string
		cfg  client.Config
		ok   bool
	}{
		{"files", client.Config{CAFile: clientFiles.CAFile, CertFile: clientFiles.CertFile, KeyFile: clientFiles.KeyFile}, true},
		{"a tls.Config", client.Config{TLS: withTLS}, true},
		{"no client certificate", client.Config{CAFile: clientFiles.CAFile}, false},
		{"plaintext", client.Config{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Endpoints = []string{nd.GRPCAddr()}
			tc.cfg.CallTimeout = time.Second
			tc.cfg.KeepRegistrationsOnClose = true
			c, err := client.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			_, err = c.Discover(ctx, "orders", client.WithConsistency(client.Leader))
			if (err == nil) != tc.ok {
				t.Errorf("Discover: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestTLSSettingsAreValidated(t *testing.T) {
	for name, cfg := range map[string]client.Config{
		"TLS and files":        {TLS: &tls.Config{}, CAFile: "ca.pem"},
		"a cert without a key": {CAFile: "ca.pem", CertFile: "c.pem"},
		"a missing CA file":    {CAFile: "/nonexistent/ca.pem"},
	} {
		cfg.Endpoints = []string{"127.0.0.1:1"}
		if c, err := client.New(cfg); err == nil {
			c.Close()
			t.Errorf("%s: New accepted it", name)
		}
	}
}
