package composetest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// These checks need no Docker daemon, so `make test` runs them wherever
// the tools are installed.

// TestComposeFileIsValid has every compose implementation on the machine
// (docker compose v2, docker-compose v1) parse deploy/docker-compose.yml,
// with and without the monitoring profile.
func TestComposeFileIsValid(t *testing.T) {
	found := 0
	for label, c := range map[string][]string{"v2": {"docker", "compose"}, "v1": {"docker-compose"}} {
		name := strings.Join(c, " ")
		if _, err := exec.LookPath(c[0]); err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		err := exec.CommandContext(ctx, c[0], append(c[1:], "version")...).Run()
		cancel()
		if err != nil {
			continue
		}
		found++
		t.Run(label, func(t *testing.T) {
			for _, profile := range [][]string{nil, {"--profile", "monitoring"}} {
				args := append(append(slices.Clone(c[1:]), profile...), "-f", filepath.Join("..", "docker-compose.yml"), "config")
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				out, err := exec.CommandContext(ctx, c[0], args...).CombinedOutput()
				cancel()
				if err != nil {
					t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
				}
				for _, want := range []string{"node1", "node2", "node3", "--bootstrap-peers=n1=node1:7101,n2=node2:7101,n3=node3:7101",
					"REGISTRY_TLS_CERT: /secrets/server-n1.pem", "REGISTRY_TLS_CLIENT_AUTH: require",
					"REGISTRY_ACL_ENABLED: \"true\"", "REGISTRY_ACL_INITIAL_MANAGEMENT_TOKEN_FILE: /secrets/management-token",
					"REGISTRY_ACL_TOKEN_FILE: /secrets/management-token"} {
					if !strings.Contains(string(out), want) {
						t.Errorf("%s %s: the output lacks %q", name, strings.Join(args, " "), want)
					}
				}
			}
		})
	}
	if found == 0 {
		t.Skip("neither docker compose nor docker-compose is installed")
	}
}

// TestMonitoringPrometheusConfigIsValid has promtool check the Prometheus
// configuration of the monitoring profile, with the alerting rules it
// loads next to it as in the container, and empty stand-ins for the TLS
// files of secrets/ (promtool checks that they exist).
func TestMonitoringPrometheusConfigIsValid(t *testing.T) {
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian: apt-get install prometheus)")
	}
	dir := t.TempDir()
	for src, dst := range map[string]string{
		filepath.Join("..", "monitoring", "prometheus.yml"):      "prometheus.yml",
		filepath.Join("..", "prometheus", "registry-alerts.yml"): "registry-alerts.yml",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "secrets"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"registry-agent-ca.pem", "client.pem", "client-key.pem", "prometheus-token"} {
		if err := os.WriteFile(filepath.Join(dir, "secrets", f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "check", "config", "prometheus.yml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
}
