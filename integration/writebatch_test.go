package integration_test

import (
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/integration/harness"
)

// Concurrent registrations and deregistrations through every node share
// Raft entries on the leader (the write group commit); each caller still
// gets its own answer: a fenced registration or an absent deregistration
// fails alone, its neighbours succeed.
func TestConcurrentWritesEachGetTheirOwnAnswer(t *testing.T) {
	c := harness.Start(t, harness.Options{})
	leader := waitLeader(t, c)
	const svc, good, fenced, absent = "batch", 40, 5, 5
	for i := range fenced {
		in := newInstance(svc, fmt.Sprint("fenced-", i), i)
		in.Incarnation = 5
		if _, err := leader.RegistryClient().Register(t.Context(), &registryv1.RegisterRequest{Instance: in}); err != nil {
			t.Fatalf("Register fenced-%d: %v", i, err)
		}
	}

	nodes := c.Nodes()
	var wg sync.WaitGroup
	errs := make(map[string]error)
	var mu sync.Mutex
	call := func(name string, n int, fn func(registryv1.RegistryClient) error) {
		wg.Go(func() {
			err := fn(nodes[n%len(nodes)].RegistryClient())
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		})
	}
	for i := range good {
		call(fmt.Sprint("good-", i), i, func(cl registryv1.RegistryClient) error {
			resp, err := cl.Register(t.Context(), &registryv1.RegisterRequest{Instance: newInstance(svc, fmt.Sprint("good-", i), 100+i)})
			if err == nil && resp.GetInstance().GetId() != fmt.Sprint("good-", i) {
				return fmt.Errorf("answered with instance %s", resp.GetInstance().GetId())
			}
			return err
		})
	}
	for i := range fenced {
		call(fmt.Sprint("fenced-", i), i, func(cl registryv1.RegistryClient) error {
			_, err := cl.Register(t.Context(), &registryv1.RegisterRequest{Instance: newInstance(svc, fmt.Sprint("fenced-", i), i)})
			return err
		})
	}
	for i := range absent {
		call(fmt.Sprint("absent-", i), i, func(cl registryv1.RegistryClient) error {
			_, err := cl.Deregister(t.Context(), &registryv1.DeregisterRequest{Service: svc, Id: fmt.Sprint("absent-", i)})
			return err
		})
	}
	wg.Wait()

	for name, err := range errs {
		var want codes.Code
		switch name[0] {
		case 'g':
			want = codes.OK
		case 'f':
			want = codes.FailedPrecondition
		case 'a':
			want = codes.NotFound
		}
		if got := status.Code(err); got != want {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	for _, in := range waitForCount(t, leader, svc, good+fenced) {
		if in.GetId()[0] == 'f' && in.GetIncarnation() != 5 {
			t.Errorf("%s is at incarnation %d, want 5 kept", in.GetId(), in.GetIncarnation())
		}
	}
}
