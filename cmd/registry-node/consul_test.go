package main

import (
	"strings"
	"testing"
)

func TestConsulAddrIsOffUnlessSetByFlagOrEnvironment(t *testing.T) {
	if cfg := configOf(t, "--node-id", "n1", "--data-dir", t.TempDir()); cfg.ConsulAddr != "" {
		t.Errorf("default consul addr %q, want off", cfg.ConsulAddr)
	}
	if cfg := configOf(t, "--node-id", "n1", "--data-dir", t.TempDir(), "--consul-addr", "127.0.0.1:8500"); cfg.ConsulAddr != "127.0.0.1:8500" {
		t.Errorf("--consul-addr 127.0.0.1:8500 gave %q", cfg.ConsulAddr)
	}
	t.Setenv("REGISTRY_CONSUL_ADDR", "127.0.0.1:8501")
	if cfg := configOf(t, "--node-id", "n1", "--data-dir", t.TempDir()); cfg.ConsulAddr != "127.0.0.1:8501" {
		t.Errorf("REGISTRY_CONSUL_ADDR=127.0.0.1:8501 gave %q", cfg.ConsulAddr)
	}
}

func TestConsulAddrThatIsNoAddressIsRefused(t *testing.T) {
	cfg := configOf(t, "--node-id", "n1", "--data-dir", t.TempDir(), "--consul-addr", "8500")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `consul addr "8500"`) {
		t.Errorf("Validate with --consul-addr 8500: %v; want an error naming it", err)
	}
}
