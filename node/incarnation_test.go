package node_test

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/node/nodetest"
	"github.com/regcenter/registry/validate"
)

// The attack: an incarnation of 2^64-1 left no higher one to supersede it.
// It is refused now, and an id at the bound is freed by a Deregister.
func TestNoIncarnationFencesAnIDForGood(t *testing.T) {
	c := nodetest.New(t, 1, nil)
	reg := c.Registry(c.Leader())
	ctx := t.Context()
	at := func(inc uint64) *registryv1.RegisterRequest {
		return &registryv1.RegisterRequest{Instance: &registryv1.Instance{Service: "orders", Id: "a", Address: "127.0.0.1:80", Incarnation: inc}}
	}
	_, err := reg.Register(ctx, at(math.MaxUint64))
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !mentions(st.Message(), "instance.incarnation", "9007199254740991") {
		t.Fatalf("register at 2^64-1: %v, want InvalidArgument naming instance.incarnation and the bound", err)
	}
	if _, err := reg.Register(ctx, at(validate.MaxIncarnation)); err != nil {
		t.Fatalf("register at the bound: %v", err)
	}
	if _, err := reg.Register(ctx, at(1)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("register below the stored incarnation: %v, want FailedPrecondition (fenced)", err)
	}
	if _, err := reg.Deregister(ctx, &registryv1.DeregisterRequest{Service: "orders", Id: "a"}); err != nil {
		t.Fatalf("deregister without an incarnation: %v", err)
	}
	if _, err := reg.Register(ctx, at(1)); err != nil {
		t.Fatalf("register at 1 after the deregister: %v", err)
	}
}

func mentions(msg string, words ...string) bool {
	for _, w := range words {
		if !strings.Contains(msg, w) {
			return false
		}
	}
	return true
}
