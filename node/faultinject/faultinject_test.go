package faultinject_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/regcenter/registry/node/faultinject"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair is two in-memory transports, a and b, connected both ways, each
// wrapped; b's consumer answers every RPC with success.
func pair(t *testing.T) (a, b *faultinject.Transport) {
	t.Helper()
	addrA, ia := raft.NewInmemTransport("a")
	addrB, ib := raft.NewInmemTransport("b")
	ia.Connect(addrB, ib)
	ib.Connect(addrA, ia)
	a, b = faultinject.Wrap(ia), faultinject.Wrap(ib)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case rpc := <-b.Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		a.Close()
		b.Close()
	})
	return a, b
}

func appendFromA(a *faultinject.Transport) error {
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("A"), Addr: []byte("a")}}
	return a.AppendEntries("B", "b", req, &raft.AppendEntriesResponse{})
}

func TestBlockDropsEachDirection(t *testing.T) {
	tests := []struct {
		name   string
		onA    faultinject.Faults
		onB    faultinject.Faults
		wantOK bool
	}{
		{"healed", faultinject.Faults{}, faultinject.Faults{}, true},
		{"a blocks b by id", faultinject.Faults{Block: []string{"B"}}, faultinject.Faults{}, false},
		{"a blocks outbound to b by address", faultinject.Faults{BlockOutbound: []string{"b"}}, faultinject.Faults{}, false},
		{"a blocks only inbound from b", faultinject.Faults{BlockInbound: []string{"B"}}, faultinject.Faults{}, true},
		{"b drops a's RPCs by id", faultinject.Faults{}, faultinject.Faults{BlockInbound: []string{"A"}}, false},
		{"b drops a's RPCs by address", faultinject.Faults{}, faultinject.Faults{Block: []string{"a"}}, false},
		{"b blocks only outbound to a", faultinject.Faults{}, faultinject.Faults{BlockOutbound: []string{"A"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := pair(t)
			a.Set(tt.onA)
			b.Set(tt.onB)
			err := appendFromA(a)
			if tt.wantOK && err != nil {
				t.Fatalf("AppendEntries: %v, want success", err)
			}
			if !tt.wantOK && err == nil {
				t.Fatal("AppendEntries succeeded, want it dropped")
			}
			if !tt.wantOK && !strings.Contains(err.Error(), faultinject.ErrBlocked.Error()) {
				t.Errorf("AppendEntries: %v, want %v", err, faultinject.ErrBlocked)
			}
			// Healing restores the link.
			a.Set(faultinject.Faults{})
			b.Set(faultinject.Faults{})
			if err := appendFromA(a); err != nil {
				t.Errorf("after heal: %v", err)
			}
		})
	}
}

func TestPipelineOpenedBeforeTheFaultIsBlocked(t *testing.T) {
	a, _ := pair(t)
	p, err := a.AppendEntriesPipeline("B", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	a.Set(faultinject.Faults{Block: []string{"B"}})
	_, err = p.AppendEntries(&raft.AppendEntriesRequest{}, &raft.AppendEntriesResponse{})
	if !errors.Is(err, faultinject.ErrBlocked) {
		t.Errorf("pipelined AppendEntries: %v, want %v", err, faultinject.ErrBlocked)
	}
}

func TestHandler(t *testing.T) {
	a, _ := pair(t)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{"block":["n2"],"block_inbound":["n3"]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST: %s", resp.Status)
	}
	want := faultinject.Faults{Block: []string{"n2"}, BlockInbound: []string{"n3"}}
	if diff := cmp.Diff(want, a.Get()); diff != "" {
		t.Errorf("Get after POST (-want +got):\n%s", diff)
	}
	resp, err = http.Post(srv.URL, "application/json", strings.NewReader(`{"blok":["n2"]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST with an unknown field: %s, want 400", resp.Status)
	}
}
