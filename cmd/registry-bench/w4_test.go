package main

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestParseStartupStepsPicksTheStepsOutOfAnExposition(t *testing.T) {
	text := `# HELP registry_startup_seconds Seconds from the start...
# TYPE registry_startup_seconds gauge
registry_startup_seconds{step="bolt_opened"} 0.0025
registry_startup_seconds{step="caught_up"} 0.1718
registry_startup_seconds_other{step="x"} 1
registry_raft_applied_index 42
`
	got := parseStartupSteps(text)
	want := map[string]time.Duration{"bolt_opened": 2500 * time.Microsecond, "caught_up": 171800 * time.Microsecond}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if d := got[k] - v; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("%s: got %v, want %v", k, got[k], v)
		}
	}
}

func TestVarintFieldSkipsOtherFields(t *testing.T) {
	// LeaseGrantResponse{header (1, a message), ID (2) = 7587, TTL (3) = 5}
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{0x08, 0x01})
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, 7587)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, 5)
	if id, err := varintField(b, 2); err != nil || id != 7587 {
		t.Errorf("ID: %d, %v; want 7587", id, err)
	}
	if _, err := varintField(b, 4); err == nil {
		t.Error("a missing field: no error")
	}
}
