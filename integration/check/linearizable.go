package check

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// LogDirEnv names the directory failure files are written under (the
// harness copies node logs there too); default t.TempDir().
const LogDirEnv = "REGCENTER_TEST_LOG_DIR"

// regState is one service's registry as the model sees it: id → the
// incarnation registered. It is never modified once built.
type regState map[string]uint64

func (s regState) with(id string, inc uint64) regState {
	n := maps.Clone(s)
	if n == nil {
		n = regState{}
	}
	n[id] = inc
	return n
}

func (s regState) without(id string) regState {
	n := maps.Clone(s)
	delete(n, id)
	return n
}

func (s regState) members() []string {
	var m []string
	for id, inc := range s {
		m = append(m, Member(id, inc))
	}
	slices.Sort(m)
	return m
}

// Model is the porcupine model of one registry, partitioned by service.
//
// Register(id, inc) stores inc unless a higher incarnation is stored (then
// it is Fenced and changes nothing); Deregister(id) removes the instance or
// is NotFound; Get answers exactly the stored instances. An Unknown write
// is modelled as having taken effect: porcupine may place it after every
// other operation, which is the same as never.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			svc := op.Input.(Input).Service
			if _, ok := by[svc]; !ok {
				order = append(order, svc)
			}
			by[svc] = append(by[svc], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, svc := range order {
			out = append(out, by[svc])
		}
		return out
	},
	Init: func() any { return regState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(regState), input.(Input), output.(Output)
		cur, present := s[in.ID]
		switch in.Kind {
		case Register:
			fenced := present && cur > in.Incarnation
			switch out.Outcome {
			case OK:
				return !fenced, s.with(in.ID, in.Incarnation)
			case Fenced:
				return fenced, s
			case Unknown:
				if fenced {
					return true, s
				}
				return true, s.with(in.ID, in.Incarnation)
			}
		case Deregister:
			switch out.Outcome {
			case OK:
				return present, s.without(in.ID)
			case NotFound:
				return !present, s
			case Unknown:
				return true, s.without(in.ID)
			}
		case Get:
			return out.Outcome == OK && slices.Equal(out.Instances, s.members()), s
		}
		return false, s
	},
	Equal: func(a, b any) bool { return maps.Equal(a.(regState), b.(regState)) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		switch in.Kind {
		case Register:
			return fmt.Sprintf("register(%s@%d) → %s", in.ID, in.Incarnation, out.Outcome)
		case Deregister:
			return fmt.Sprintf("deregister(%s) → %s", in.ID, out.Outcome)
		default:
			return fmt.Sprintf("get → [%s] @%d", strings.Join(out.Instances, " "), out.Index)
		}
	},
	DescribeState: func(state any) string {
		return "{" + strings.Join(state.(regState).members(), " ") + "}"
	},
}

// Operations converts the history for porcupine: an operation without a
// return returns at the end of time.
func (h *History) Operations() []porcupine.Operation {
	ops := h.Ops()
	out := make([]porcupine.Operation, 0, len(ops))
	for _, o := range ops {
		ret := int64(math.MaxInt64)
		if o.Done() {
			ret = int64(o.Return)
		}
		out = append(out, porcupine.Operation{
			ClientId: o.Client,
			Input:    o.Input,
			Call:     int64(o.Call),
			Output:   o.Output,
			Return:   ret,
			Metadata: o.Node,
		})
	}
	return out
}

// Linearizable checks the history with porcupine, within timeout. On a
// violation (or if the check times out) it fails the test naming the files
// it wrote: the history and porcupine's visualisation. With
// $REGCENTER_TEST_LOG_DIR set it writes them in any case. It returns the
// result.
func Linearizable(t testing.TB, h *History, timeout time.Duration) porcupine.CheckResult {
	t.Helper()
	model := Model
	model.DescribeOperationMetadata = func(info any) string {
		if s, ok := info.(string); ok {
			return "via " + s
		}
		return ""
	}
	res, info := porcupine.CheckOperationsVerbose(model, h.Operations(), timeout)
	if res == porcupine.Ok && os.Getenv(LogDirEnv) == "" {
		return res
	}
	dir := FailureDir(t)
	histPath := filepath.Join(dir, "history.jsonl")
	visPath := filepath.Join(dir, "linearizability.html")
	werr := h.WriteFile(histPath)
	if err := porcupine.VisualizePath(model, info, visPath); err != nil && werr == nil {
		werr = err
	}
	if werr != nil {
		t.Errorf("check: writing the history files: %v", werr)
	}
	if res == porcupine.Ok {
		t.Logf("check: history is linearizable (%d operations); kept in %s and %s", len(h.Ops()), histPath, visPath)
		return res
	}
	t.Errorf("check: history is %s by porcupine (%d operations); history: %s; visualisation: %s",
		res, len(h.Ops()), histPath, visPath)
	return res
}

// FailureDir is where a failed check writes its files:
// $REGCENTER_TEST_LOG_DIR/<test name> if set, else a t.TempDir().
func FailureDir(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv(LogDirEnv); dir != "" {
		dir = filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
		if err := os.MkdirAll(dir, 0o755); err == nil {
			return dir
		}
	}
	return t.TempDir()
}

// WriteFile writes the history as JSON, one operation per line.
func (h *History) WriteFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, o := range h.Ops() {
		if err := enc.Encode(o); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LostWrite is an acknowledged write the final state contradicts.
type LostWrite struct {
	Op    Op
	Final []string // the service's final instances
}

// LostWrites returns the acknowledged writes that the final state of their
// service (sorted "id@incarnation", as read after every client stopped)
// does not reflect, for the writes that must be reflected: those that
// every other possibly-effective write on the same instance precedes in
// real time. final maps service → members; a service missing from it is
// not checked.
func (h *History) LostWrites(final map[string][]string) []LostWrite {
	type key struct{ svc, id string }
	writes := map[key][]Op{}
	for _, o := range h.Ops() {
		if o.Input.Kind == Register || o.Input.Kind == Deregister {
			k := key{o.Input.Service, o.Input.ID}
			writes[k] = append(writes[k], o)
		}
	}
	var lost []LostWrite
	for k, ws := range writes {
		members, ok := final[k.svc]
		if !ok {
			continue
		}
		for i, w := range ws {
			if w.Output.Outcome != OK {
				continue
			}
			last := true
			for j, o := range ws {
				effective := o.Output.Outcome == OK || o.Output.Outcome == Unknown
				if j != i && effective && !(o.Done() && o.Return < w.Call) {
					last = false
					break
				}
			}
			if !last {
				continue
			}
			var held bool
			switch w.Input.Kind {
			case Register:
				held = slices.Contains(members, Member(k.id, w.Input.Incarnation))
			case Deregister:
				held = !slices.ContainsFunc(members, func(m string) bool { return strings.HasPrefix(m, k.id+"@") })
			}
			if !held {
				lost = append(lost, LostWrite{Op: w, Final: members})
			}
		}
	}
	return lost
}

// StaleReads counts the Gets that miss a write they must reflect: an
// acknowledged write on an instance of the Get's service that returned
// before the Get was called, when every other possibly-effective write on
// that instance called before the Get returned precedes it in real time.
// It is a direct, explainable subset of what Linearizable checks.
func (h *History) StaleReads() []Op {
	type key struct{ svc, id string }
	ops := h.Ops()
	writes := map[key][]Op{}
	for _, o := range ops {
		if o.Input.Kind == Register || o.Input.Kind == Deregister {
			k := key{o.Input.Service, o.Input.ID}
			writes[k] = append(writes[k], o)
		}
	}
	var stale []Op
	for _, g := range ops {
		if g.Input.Kind != Get {
			continue
		}
	keys:
		for k, ws := range writes {
			if k.svc != g.Input.Service {
				continue
			}
			for i, w := range ws {
				if w.Output.Outcome != OK || w.Return >= g.Call {
					continue
				}
				last := true
				for j, o := range ws {
					effective := o.Output.Outcome == OK || o.Output.Outcome == Unknown
					if j != i && effective && o.Call <= g.Return && !(o.Done() && o.Return < w.Call) {
						last = false
						break
					}
				}
				if !last {
					continue
				}
				var held bool
				switch w.Input.Kind {
				case Register:
					held = slices.Contains(g.Output.Instances, Member(k.id, w.Input.Incarnation))
				case Deregister:
					held = !slices.ContainsFunc(g.Output.Instances, func(m string) bool { return strings.HasPrefix(m, k.id+"@") })
				}
				if !held {
					stale = append(stale, g)
					break keys
				}
			}
		}
	}
	return stale
}
