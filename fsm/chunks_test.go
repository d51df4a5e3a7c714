package fsm

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/regcenter/registry/fsm/fsmpb"
)

// The chunked store against a map model: random puts, overwrites and
// removals over several chunks (so removals move instances between chunks
// and the store grows and shrinks by whole chunks), with freezes in
// between. After every step the index and the store agree with the model,
// and every frozen view still holds exactly what the model held when it
// was frozen.
func TestStoreMatchesAModelAcrossFreezes(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 4))
	s := NewState()
	model := map[string]uint64{}
	type view struct {
		f    frozen
		want map[string]uint64
	}
	var views []view
	for step := range 6000 {
		id := fmt.Sprint(rng.IntN(4 * chunkSize))
		svc := []string{"a", "b", "c"}[len(id)%3]
		key := svc + "/" + id
		if rng.IntN(3) == 0 {
			s.remove(svc, id)
			delete(model, key)
		} else {
			s.put(Instance{Service: svc, ID: id, LastBeatIndex: uint64(step)})
			model[key] = uint64(step)
		}
		if step%500 == 0 {
			want := map[string]uint64{}
			for k, v := range model {
				want[k] = v
			}
			views = append(views, view{s.insts.freeze(), want})
		}
	}
	got := map[string]uint64{}
	s.scan(func(in *Instance) { got[in.Service+"/"+in.ID] = in.LastBeatIndex })
	if diff := cmp.Diff(model, got); diff != "" {
		t.Fatalf("store (-model +store):\n%s", diff)
	}
	if want := (s.insts.len() + chunkSize - 1) / chunkSize; len(s.insts.chunks) != want {
		t.Errorf("%d chunks for %d instances, want %d", len(s.insts.chunks), s.insts.len(), want)
	}
	for key, idx := range model {
		var svc, id string
		for i := range key {
			if key[i] == '/' {
				svc, id = key[:i], key[i+1:]
				break
			}
		}
		if in, ok := s.Get(svc, id); !ok || in.LastBeatIndex != idx {
			t.Fatalf("Get(%s) = %+v, %v; want LastBeatIndex %d", key, in, ok, idx)
		}
	}
	for i, v := range views {
		got := map[string]uint64{}
		for _, in := range v.f.all() {
			got[in.Service+"/"+in.ID] = in.LastBeatIndex
		}
		if diff := cmp.Diff(v.want, got); diff != "" {
			t.Fatalf("frozen view %d changed after it was taken (-then +now):\n%s", i, diff)
		}
	}
}

// Every instance of a service shares one copy of the service name, and of
// each metadata key, whatever command or snapshot record brought it.
func TestServiceNamesAndMetadataKeysAreInterned(t *testing.T) {
	s := NewState()
	for i := range 3 {
		// Each command gets its own copies of the strings, as decoding does.
		svc, key := string([]byte("payments")), string([]byte("zone"))
		if _, _, err := s.Register(uint64(i+1), &fsmpb.Register{Service: svc, Id: fmt.Sprint(i), Incarnation: 1,
			Metadata: map[string]string{key: "a"}}); err != nil {
			t.Fatal(err)
		}
	}
	// And a snapshot record, decoded as Restore decodes it.
	b, err := proto.Marshal(&fsmpb.Instance{Service: "payments", Id: "r", State: int32(StateHealthy), Metadata: map[string]string{"zone": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	var dec instanceDecoder
	rec, _, err := dec.decodeInstance(b)
	if err != nil {
		t.Fatal(err)
	}
	s.put(rec)
	names, keys := map[*byte]bool{}, map[*byte]bool{}
	s.scan(func(in *Instance) {
		names[unsafe.StringData(in.Service)] = true
		for k := range in.Metadata {
			keys[unsafe.StringData(k)] = true
		}
	})
	if len(names) != 1 || len(keys) != 1 {
		t.Errorf("4 instances of one service hold %d copies of its name and %d of one metadata key, want 1 and 1", len(names), len(keys))
	}
}
