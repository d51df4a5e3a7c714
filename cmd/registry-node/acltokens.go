package main

import (
	"fmt"

	"github.com/regcenter/registry/node"
)

// readTokenFiles reads --acl-token-file and
// --acl-initial-management-token-file into cfg.
func (o *options) readTokenFiles(cfg *node.Config) error {
	if o.aclTokenFile != "" {
		s, err := node.ReadTokenFile(o.aclTokenFile)
		if err != nil {
			return fmt.Errorf("--acl-token-file: %w", err)
		}
		cfg.ACLToken = string(s)
	}
	if o.aclInitialFile != "" {
		s, err := node.ReadTokenFile(o.aclInitialFile)
		if err != nil {
			return fmt.Errorf("--acl-initial-management-token-file: %w", err)
		}
		cfg.ACLInitialManagementToken = s
	}
	return nil
}
