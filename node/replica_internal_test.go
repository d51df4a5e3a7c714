package node

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/regcenter/registry/rpc"
)

func TestCheckDemote(t *testing.T) {
	conf := func(voters, replicas int) raft.Configuration {
		var c raft.Configuration
		for i := range voters {
			c.Servers = append(c.Servers, raft.Server{ID: raft.ServerID(string(rune('a' + i))), Suffrage: raft.Voter})
		}
		for i := range replicas {
			c.Servers = append(c.Servers, raft.Server{ID: raft.ServerID(string(rune('r' + i))), Suffrage: raft.Nonvoter})
		}
		return c
	}
	for _, tc := range []struct {
		name       string
		conf       raft.Configuration
		id         string
		wantChange bool
		wantErr    error
	}{
		{"a voter of four", conf(4, 0), "b", true, nil},
		{"a voter of five, with replicas", conf(5, 2), "e", true, nil},
		{"the leader", conf(5, 0), "a", false, rpc.ErrMembershipRefused},
		{"a voter of three", conf(3, 2), "b", false, rpc.ErrMembershipRefused},
		{"a voter of two", conf(2, 0), "b", false, rpc.ErrMembershipRefused},
		{"a replica", conf(3, 2), "r", false, nil},
		{"not a member", conf(3, 0), "z", false, rpc.ErrNotMember},
	} {
		t.Run(tc.name, func(t *testing.T) {
			change, err := checkDemote(tc.conf, tc.id, "a")
			if change != tc.wantChange || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("checkDemote(%s) = %v, %v; want %v, %v", tc.id, change, err, tc.wantChange, tc.wantErr)
			}
		})
	}
}
