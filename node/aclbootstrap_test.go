package node_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/regcenter/registry/acl"
	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node"
	"github.com/regcenter/registry/node/nodetest"
)

// A cluster whose servers share an initial management token comes up
// bootstrapped with it: the token works on every node, the nodes use it as
// their own token, `acl bootstrap` is refused, and a new leader does not
// bootstrap again. The secret is never logged.
func TestACLInitialManagementToken(t *testing.T) {
	const secret = "5b0c5a4e-2f6d-4c1e-9e0a-7d3c2b1a0f9e"
	logs := &nodetest.Buffer{}
	c := nodetest.New(t, 3, func(cfg *node.Config) {
		cfg.ACLEnabled = true
		cfg.ACLInitialManagementToken = secret
		cfg.ACLToken = secret
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_node", cfg.NodeID)
	})
	leader := c.Leader()
	ctx := t.Context()
	mgmt := bearer(ctx, secret)
	aclc := func(i int) registryv1.ACLClient { return registryv1.NewACLClient(c.Conns[i]) }

	// Every node knows the token once it has applied the bootstrap.
	for i := range 3 {
		poll.Eventually(t, 10*time.Second, func(context.Context) error {
			_, err := aclc(i).TokenList(mgmt, &registryv1.ACLTokenListRequest{})
			return err
		})
		_, err := c.Registry(i).ListServices(ctx, &registryv1.ListServicesRequest{})
		wantCode(t, fmt.Sprintf("n%d: ListServices without a token", i+1), err, codes.Unauthenticated, "")
	}
	_, err := aclc(leader).Bootstrap(ctx, &registryv1.ACLBootstrapRequest{})
	wantCode(t, "acl bootstrap after the initial token", err, codes.FailedPrecondition, "")

	initialTokens := func(i int) ([]string, error) {
		list, err := aclc(i).TokenList(mgmt, &registryv1.ACLTokenListRequest{})
		if err != nil {
			return nil, err
		}
		var ids []string
		for _, tk := range list.Tokens {
			ids = append(ids, tk.AccessorId)
		}
		return ids, nil
	}
	first, err := initialTokens(leader)
	if err != nil || len(first) != 1 {
		t.Fatalf("tokens after start: %v, %v; want exactly one", first, err)
	}

	// The nodes' own token works: every node publishes its addresses.
	poll.Eventually(t, 10*time.Second, func(ctx context.Context) error {
		st, err := registryv1.NewClusterClient(c.Conns[leader]).Status(bearer(ctx, secret), &registryv1.StatusRequest{})
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.GrpcAddress == "" {
				return fmt.Errorf("%s has not published its addresses", m.Id)
			}
		}
		return nil
	})

	// A new leader finds the cluster bootstrapped and adds nothing.
	if err := c.Shutdown(leader); err != nil {
		t.Fatal(err)
	}
	next := c.Leader()
	if _, err := registryv1.NewRegistryClient(c.Conns[next]).Register(mgmt, &registryv1.RegisterRequest{Instance: instance("orders", "o1")}); err != nil {
		t.Fatalf("Register through the new leader with the initial token: %v", err)
	}
	after, err := initialTokens(next)
	if err != nil || len(after) != 1 || after[0] != first[0] {
		t.Errorf("tokens after a leader change: %v, %v; want %v", after, err, first)
	}

	if strings.Contains(logs.String(), secret) {
		t.Errorf("the logs hold the initial management secret")
	}
	if !strings.Contains(logs.String(), "ACLs bootstrapped with the initial management token") {
		t.Errorf("no node logged the bootstrap")
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := node.ReadTokenFile(write("ok", "  5b0c5a4e-2f6d-4c1e-9e0a-7d3c2b1a0f9e\n"))
	if err != nil || got != acl.Secret("5b0c5a4e-2f6d-4c1e-9e0a-7d3c2b1a0f9e") {
		t.Errorf("ReadTokenFile(a secret and a newline) = %q, %v", string(got), err)
	}
	for _, tc := range []struct{ name, content, want string }{
		{"empty", " \n", "is empty"},
		{"short", "abcdefghijklmno\n", "at least 16"},
		{"space inside", "abc def\n", "not allowed"},
		{"quote", `"hunter2"`, "not allowed"},
		{"too long", strings.Repeat("a", node.MaxTokenFileBytes+1), "longer than"},
	} {
		_, err := node.ReadTokenFile(write(tc.name, tc.content))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
		if err != nil && strings.TrimSpace(tc.content) != "" && strings.Contains(err.Error(), strings.TrimSpace(tc.content)[:3]) {
			t.Errorf("%s: the error %q quotes the file", tc.name, err)
		}
	}
	if _, err := node.ReadTokenFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}
