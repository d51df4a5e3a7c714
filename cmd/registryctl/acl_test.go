package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
)

func TestACLCommands(t *testing.T) {
	c := nodetest.New(t, 1, func(cfg *node.Config) { cfg.ACLEnabled = true })
	c.Leader()
	t.Setenv(endpointsEnv, strings.Join(c.Endpoints(), ","))
	t.Setenv(tokenEnv, "")

	secretOf := func(stdout string) (accessor, secret string) {
		t.Helper()
		var tok struct{ AccessorID, SecretID string }
		var raw map[string]any
		if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
			t.Fatalf("not JSON: %q", stdout)
		}
		tok.AccessorID, _ = raw["accessor_id"].(string)
		tok.SecretID, _ = raw["secret_id"].(string)
		if tok.AccessorID == "" || tok.SecretID == "" {
			t.Fatalf("no accessor_id and secret_id in %s", stdout)
		}
		return tok.AccessorID, tok.SecretID
	}

	stdout, stderr, code := ctl(t, "acl", "bootstrap", "-o", "json")
	if code != exitOK {
		t.Fatalf("acl bootstrap: %d %s", code, stderr)
	}
	_, mgmt := secretOf(stdout)
	if _, stderr, code := ctl(t, "acl", "bootstrap"); code != exitFailure || !strings.Contains(stderr, "FAILED_PRECONDITION") {
		t.Errorf("second bootstrap: exit %d, %s", code, stderr)
	}
	if _, stderr, code := ctl(t, "services"); code != exitFailure || !strings.Contains(stderr, "UNAUTHENTICATED") {
		t.Errorf("services without a token: exit %d, %s", code, stderr)
	}

	rules := filepath.Join(t.TempDir(), "orders.hcl")
	if err := os.WriteFile(rules, []byte(`service "orders" { policy = "write" }`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := ctl(t, "--token", mgmt, "acl", "policy", "create", "--name", "orders", "--rules", rules); code != exitOK {
		t.Fatalf("policy create: %s", stderr)
	}
	stdout, stderr, code = ctl(t, "--token", mgmt, "acl", "token", "create", "--policy", "orders", "--description", "orders app", "-o", "json")
	if code != exitOK {
		t.Fatalf("token create: %s", stderr)
	}
	accessor, orders := secretOf(stdout)

	// REGISTRY_TOKEN is the default --token.
	t.Setenv(tokenEnv, orders)
	if _, stderr, code := ctl(t, "register", "orders", "o1", "10.0.0.1:80"); code != exitOK {
		t.Errorf("register orders with the orders token: %s", stderr)
	}
	if _, stderr, code := ctl(t, "register", "payments", "p1", "10.0.0.2:80"); code != exitFailure || !strings.Contains(stderr, "service:payments:write") {
		t.Errorf("register payments with the orders token: exit %d, %s", code, stderr)
	}

	stdout, stderr, code = ctl(t, "--token", mgmt, "acl", "token", "list")
	if code != exitOK || !strings.Contains(stdout, accessor) || strings.Contains(stdout, orders) || strings.Contains(stdout, mgmt) {
		t.Errorf("token list: exit %d, %s%s (want the accessor, no secret)", code, stdout, stderr)
	}
	if _, stderr, code := ctl(t, "--token", mgmt, "acl", "token", "delete", accessor); code != exitOK {
		t.Fatalf("token delete: %s", stderr)
	}
	poll.Eventually(t, 5*time.Second, func(context.Context) error {
		if _, stderr, code := ctl(t, "services"); code != exitFailure || !strings.Contains(stderr, "UNAUTHENTICATED") {
			return fmt.Errorf("the deleted token still works: exit %d, %s", code, stderr)
		}
		return nil
	})
	stdout, _, _ = ctl(t, "--token", mgmt, "acl", "policy", "list")
	if !strings.Contains(stdout, `service "orders"`) {
		t.Errorf("policy list: %s", stdout)
	}
	if _, stderr, code := ctl(t, "--token", mgmt, "acl", "policy", "delete", "orders"); code != exitOK {
		t.Errorf("policy delete: %s", stderr)
	}
}
