package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/regcenter/registry/acl"
)

func TestACLTokenFilesReachTheNodeConfig(t *testing.T) {
	dir := t.TempDir()
	agent, initial := filepath.Join(dir, "agent"), filepath.Join(dir, "initial")
	if err := os.WriteFile(agent, []byte("agent-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initial, []byte("initial-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REGISTRY_ACL_INITIAL_MANAGEMENT_TOKEN_FILE", initial)
	cfg := configOf(t, "--node-id", "n1", "--data-dir", dir, "--acl-enabled", "--acl-token", "from-flag", "--acl-token-file", agent)
	if cfg.ACLToken != "agent-secret-0123456789" {
		t.Errorf("ACLToken = %q, want the file's agent-secret-0123456789 (the file wins over --acl-token)", cfg.ACLToken)
	}
	if cfg.ACLInitialManagementToken != acl.Secret("initial-secret-0123456789") {
		t.Errorf("ACLInitialManagementToken = %q, want initial-secret-0123456789 from the environment's file", string(cfg.ACLInitialManagementToken))
	}
}

func TestABadTokenFileIsAStartupErrorThatHidesTheFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--acl-token-file", "--acl-initial-management-token-file"} {
		var out bytes.Buffer
		if code := run([]string{"--node-id", "n1", "--data-dir", dir, "--acl-enabled", flag, bad}, &out); code != exitUsage {
			t.Errorf("%s with a bad file: exit %d, want %d", flag, code, exitUsage)
		}
		if got := out.String(); !strings.Contains(got, flag) || strings.Contains(got, "not a token") {
			t.Errorf("%s with a bad file: %q; want the flag named and the content not shown", flag, got)
		}
	}
}
