package main

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/tlsutil"
)

func TestHelpDocumentsEveryFlagWithItsEnvironmentVariable(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--help"}, &out); code != exitOK {
		t.Fatalf("--help exited %d, want 0", code)
	}
	for _, flag := range []string{"node-id", "data-dir", "raft-addr", "raft-advertise", "grpc-addr", "http-addr",
		"bootstrap-peers", "join", "read-replica", "log-level", "log-format", "enable-pprof"} {
		if !strings.Contains(out.String(), "-"+flag+" ") && !strings.Contains(out.String(), "-"+flag+"\n") { // a bool flag has no value
			t.Errorf("--help does not document --%s", flag)
		}
		if !strings.Contains(out.String(), envName(flag)) {
			t.Errorf("--help does not name %s", envName(flag))
		}
	}
	if !strings.Contains(out.String(), `(default "127.0.0.1:7001")`) {
		t.Errorf("--help does not show the default gRPC address:\n%s", out.String())
	}
}

func TestStartupProblemsPrintOneLineAndExit2(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--bogus"}, "flag provided but not defined: -bogus"},
		{"no node id", []string{"--data-dir", dir}, "--node-id is required"},
		{"no data dir", []string{"--node-id", "n1"}, "--data-dir is required"},
		{"bad peers", []string{"--node-id", "n1", "--data-dir", dir, "--bootstrap-peers", "n1"}, "--bootstrap-peers"},
		{"bad log level", []string{"--node-id", "n1", "--data-dir", dir, "--log-level", "loud"}, "--log-level"},
		{"bad log format", []string{"--node-id", "n1", "--data-dir", dir, "--log-format", "xml"}, "--log-format"},
		{"port in use", []string{"--node-id", "n1", "--data-dir", dir, "--raft-addr", "127.0.0.1:0",
			"--grpc-addr", busy.Addr().String(), "--http-addr", ""}, "address already in use"},
		{"pprof without http", []string{"--node-id", "n1", "--data-dir", dir, "--http-addr", "", "--enable-pprof"}, "--enable-pprof needs --http-addr"},
		{"stray argument", []string{"--node-id", "n1", "extra"}, `unexpected argument "extra"`},
		{"tls cert without key and ca", []string{"--node-id", "n1", "--data-dir", dir, "--tls-cert", "c.pem"}, "set all three or none"},
		{"bad tls client auth", []string{"--node-id", "n1", "--data-dir", dir, "--tls-client-auth", "maybe"}, `client auth "maybe"`},
		{"missing tls files", []string{"--node-id", "n1", "--data-dir", dir, "--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem"}, "c.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := run(tt.args, &out); code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			got := out.String()
			if strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "registry-node: ") {
				t.Errorf("output is not one line starting with the program name:\n%s", got)
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("output %q does not say %q", got, tt.want)
			}
		})
	}
}

func TestEnvironmentSetsFlagsAndTheCommandLineWins(t *testing.T) {
	t.Setenv("REGISTRY_NODE_ID", "from-env")
	t.Setenv("REGISTRY_GRPC_ADDR", "127.0.0.1:9999")
	o, err := parse([]string{"--grpc-addr", "127.0.0.1:8888"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.nodeID != "from-env" || o.grpcAddr != "127.0.0.1:8888" {
		t.Errorf("node id %q grpc addr %q; want from-env (environment) and 127.0.0.1:8888 (flag)", o.nodeID, o.grpcAddr)
	}
}

func TestTLSFilesComeFromFlagsOrEnvironment(t *testing.T) {
	t.Setenv("REGISTRY_TLS_CERT", "env-cert.pem")
	t.Setenv("REGISTRY_TLS_KEY", "env-key.pem")
	t.Setenv("REGISTRY_TLS_CA", "env-ca.pem")
	cfg := configOf(t, "--node-id", "n1", "--data-dir", t.TempDir(), "--tls-ca", "flag-ca.pem")
	want := tlsutil.DefaultConfig()
	want.CertFile, want.KeyFile, want.CAFile = "env-cert.pem", "env-key.pem", "flag-ca.pem"
	if cfg.TLS != want {
		t.Errorf("TLS config %+v, want %+v", cfg.TLS, want)
	}
	if got := configOf(t, "--node-id", "n1", "--data-dir", t.TempDir(), "--tls-reload-interval", "0").TLS.ReloadInterval; got >= 0 {
		t.Errorf("--tls-reload-interval 0: ReloadInterval %v, want negative (off)", got)
	}
}

func TestEnablePprofIsOffByDefaultAndSetByFlagOrEnvironment(t *testing.T) {
	o, err := parse([]string{"--node-id", "n1", "--data-dir", t.TempDir()}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.nodeConfig(slog.New(slog.DiscardHandler), slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EnablePprof {
		t.Error("pprof is on without --enable-pprof")
	}
	o, err = parse([]string{"--node-id", "n1", "--data-dir", t.TempDir(), "--enable-pprof"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err = o.nodeConfig(slog.New(slog.DiscardHandler), slog.LevelInfo); err != nil || !cfg.EnablePprof {
		t.Errorf("--enable-pprof: EnablePprof %v, error %v; want on", cfg.EnablePprof, err)
	}
	t.Setenv("REGISTRY_ENABLE_PPROF", "true")
	o, err = parse([]string{"--node-id", "n1", "--data-dir", t.TempDir()}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err = o.nodeConfig(slog.New(slog.DiscardHandler), slog.LevelInfo); err != nil || !cfg.EnablePprof {
		t.Errorf("REGISTRY_ENABLE_PPROF=true: EnablePprof %v, error %v; want on", cfg.EnablePprof, err)
	}
}

// With no flags, the node runs with node.DefaultConfig: the flags' defaults
// are taken from it, not restated.
func TestFlagDefaultsAreTheNodesDefaults(t *testing.T) {
	dir := t.TempDir()
	got := configOf(t, "--node-id", "n1", "--data-dir", dir)
	want := node.DefaultConfig()
	want.NodeID, want.DataDir = "n1", dir
	for _, c := range []*node.Config{&got, &want} {
		c.Logger, c.Clock, c.Checker.Logger, c.Checker.Clock, c.Checker.Backlog = nil, nil, nil, nil, nil
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config without flags (-node.DefaultConfig +got):\n%s", diff)
	}
}

func TestLimitFlagsReachTheNodeConfig(t *testing.T) {
	got := configOf(t, "--node-id", "n1", "--data-dir", t.TempDir(), "--max-connections", "10", "--write-rate", "5",
		"--write-burst", "7", "--max-watches-per-client", "3", "--grpc-max-concurrent-streams", "9",
		"--http-read-timeout", "2s", "--http-allowed-origins", "https://a.example, http://b.example:80",
		"--http-allowed-hosts", "a.example", "--max-watchers", "50000")
	want := node.DefaultLimits()
	want.MaxConnections, want.WriteRate, want.WriteBurst, want.MaxWatchesPerClient = 10, 5, 7, 3
	want.GRPCMaxConcurrentStreams, want.HTTPReadTimeout = 9, 2*time.Second
	want.HTTPAllowedOrigins = []string{"https://a.example", "http://b.example:80"}
	want.HTTPAllowedHosts = []string{"a.example"}
	if diff := cmp.Diff(want, got.Limits); diff != "" {
		t.Errorf("limits (-want +got):\n%s", diff)
	}
	if got.MaxWatchers != 50000 {
		t.Errorf("MaxWatchers = %d, want 50000 (--max-watchers)", got.MaxWatchers)
	}
}

// configOf is the node.Config the command line args give.
func configOf(t *testing.T, args ...string) node.Config {
	t.Helper()
	o, err := parse(args, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.nodeConfig(slog.New(slog.DiscardHandler), slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestDNSFlagsReachTheNodeConfig(t *testing.T) {
	if got := configOf(t, "--node-id", "n1", "--data-dir", t.TempDir()).DNS; got.Enabled() || got.TTL != 0 || got.Domain != "registry." {
		t.Errorf("DNS without flags %+v: want off, TTL 0, domain registry.", got)
	}
	t.Setenv("REGISTRY_DNS_TTL", "5s")
	got := configOf(t, "--node-id", "n1", "--data-dir", t.TempDir(), "--dns-addr", "127.0.0.1:8600", "--dns-domain", "example.")
	if got.DNS.Addr != "127.0.0.1:8600" || got.DNS.Domain != "example." || got.DNS.TTL != 5*time.Second {
		t.Errorf("DNS %+v: want 127.0.0.1:8600, example., 5s (from the environment)", got.DNS)
	}
}
