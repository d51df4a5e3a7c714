package integration_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
)

// buildRegistryctl builds cmd/registryctl into a directory of the test.
func buildRegistryctl(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "registryctl")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", path, "github.com/regcenter/registry/cmd/registryctl").CombinedOutput()
	if err != nil {
		t.Fatalf("go build registryctl: %v\n%s", err, out)
	}
	return path
}

// registryctl runs the binary against every node of c and fails the test
// unless it exits 0; it returns its standard output.
func registryctl(t *testing.T, binary string, c *harness.Cluster, args ...string) string {
	t.Helper()
	var endpoints []string
	for _, n := range c.Nodes() {
		endpoints = append(endpoints, n.GRPCAddr())
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "REGISTRY_ENDPOINTS="+strings.Join(endpoints, ","))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("registryctl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func TestABackupRestoredIntoAWipedClusterBringsBackEveryInstance(t *testing.T) {
	ctl := buildRegistryctl(t)
	c := harness.Start(t, harness.Options{})
	waitLeader(t, c)

	const n = 60
	var instances []*registryv1.Instance
	for i := range n {
		in := newInstance(fmt.Sprintf("svc-%d", i%3), fmt.Sprintf("inst-%02d", i), i)
		in.Metadata = map[string]string{"i": fmt.Sprint(i)}
		instances = append(instances, in)
	}
	saved := registerAll(t, c.Nodes(), 4, instances)
	backup := filepath.Join(t.TempDir(), "registry.snap")
	out := registryctl(t, ctl, c, "snapshot", "save", backup)
	if !strings.Contains(out, fmt.Sprintf("saved %d instances", n)) {
		t.Fatalf("snapshot save said %q", out)
	}

	// Wipe: every node loses its data and bootstraps an empty cluster.
	if err := c.KillAll(); err != nil {
		t.Fatal(err)
	}
	for _, node := range c.Nodes() {
		if err := os.RemoveAll(node.DataDir()); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(node.DataDir(), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.RestartAll(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, c)
	if out := registryctl(t, ctl, c, "services"); strings.Count(out, "\n") != 1 {
		t.Fatalf("the wiped cluster is not empty:\n%s", out)
	}

	out = registryctl(t, ctl, c, "snapshot", "restore", backup)
	if !strings.Contains(out, fmt.Sprintf("restored %d instances", n)) {
		t.Fatalf("snapshot restore said %q", out)
	}
	for _, node := range c.Nodes() {
		var got []*registryv1.Instance
		for s := range 3 {
			got = append(got, waitForCount(t, node, fmt.Sprintf("svc-%d", s), n/3)...)
		}
		if diff := cmp.Diff(saved, recordsOf(got)); diff != "" {
			t.Errorf("%s after the restore (-saved +restored):\n%s", node, diff)
		}
	}
	if out := registryctl(t, ctl, c, "instances", "svc-0"); strings.Count(out, "healthy") != n/3 {
		t.Errorf("registryctl instances svc-0 after the restore:\n%s", out)
	}
}
