package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// w1StepResult is a synthetic W1 step result as w1Step reports it.
func w1StepResult(mode string, n int, p99 time.Duration) *result {
	r := &result{Workload: "W1", Case: mode, Params: map[string]any{"mode": mode, "instances": n}}
	r.addMs("beat_latency_p99", p99)
	return r
}

// distResult is a synthetic result with the distribution name of samples.
func distResult(workload, c, name string, samples ...time.Duration) *result {
	r := &result{Workload: workload, Case: c, Params: map[string]any{}}
	r.addDist(name, samples)
	return r
}

func isSVG(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	head := b[:min(len(b), 200)]
	if !bytes.HasPrefix(head, []byte("<?xml")) || !bytes.Contains(head, []byte("<svg")) {
		t.Errorf("%s does not start as an SVG document: %q", path, head)
	}
	if !bytes.Contains(b, []byte("</svg>")) {
		t.Errorf("%s has no closing </svg>", path)
	}
}

func TestPlotsAreWrittenForEachWorkloadThatRan(t *testing.T) {
	ms := time.Millisecond
	results := []*result{
		distResult("W2", "64 workers", "latency", 3*ms, 5*ms, 8*ms, 40*ms),
		w1StepResult("batched", 10_000, 20*ms),
		w1StepResult("batched", 30_000, 45*ms),
		w1StepResult("single", 10_000, 60*ms),
		{Workload: "W1", Case: "batched capacity", Params: map[string]any{"max_p99_ms": 100.0}},
		distResult("W5", "1000 watchers", "delivery", 10*ms, 12*ms, 30*ms),
		distResult("W5", "10000 watchers", "delivery", 50*ms, 80*ms, 200*ms),
		distResult("W3", "removal", "removal", time.Second),
	}
	dir := filepath.Join(t.TempDir(), "plots")
	written, err := writePlots(dir, results)
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != 3 {
		t.Errorf("wrote %v, want the three plots", written)
	}
	for _, name := range []string{"w1-p99.svg", "w2-latency.svg", "w5-delivery.svg"} {
		isSVG(t, filepath.Join(dir, name))
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("%s holds %d files, want 3", dir, len(entries))
	}
}

func TestNoPlotIsWrittenForAWorkloadThatDidNotRun(t *testing.T) {
	ms := time.Millisecond
	dir := t.TempDir()
	// Only W5 and DNS ran (DNS's latency is not W2's); W1 reported only a
	// step that failed at registration (no p99) - nothing to draw for it.
	results := []*result{
		distResult("W5", "1000 watchers", "delivery", 10*ms, 12*ms),
		distResult("DNS", "A", "latency", 1*ms, 2*ms),
		{Workload: "W1", Case: "batched 10000", Params: map[string]any{"mode": "batched", "instances": 10_000}},
	}
	written, err := writePlots(dir, results)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "w5-delivery.svg"); len(written) != 1 || written[0] != want {
		t.Errorf("wrote %v, want only %s", written, want)
	}
	isSVG(t, filepath.Join(dir, "w5-delivery.svg"))
	for _, name := range []string{"w1-p99.svg", "w2-latency.svg"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s: want no such file, got err %v", name, err)
		}
	}
}

func TestAddDistKeepsABoundedQuantileSketch(t *testing.T) {
	samples := make([]time.Duration, 100_000)
	for i := range samples {
		samples[i] = time.Duration(len(samples)-i) * time.Microsecond // 1µs … 100ms, reversed
	}
	r := distResult("W5", "c", "delivery", samples...)
	q := r.dists["delivery"]
	if len(q) != distQuantiles+1 {
		t.Fatalf("kept %d points, want %d", len(q), distQuantiles+1)
	}
	if q[0] != time.Microsecond || q[len(q)-1] != 100*time.Millisecond || q[distQuantiles/2] != 50*time.Millisecond {
		t.Errorf("min, median, max = %v, %v, %v; want 1µs, 50ms, 100ms", q[0], q[distQuantiles/2], q[len(q)-1])
	}
	if empty := distResult("W5", "c", "delivery"); empty.dists != nil {
		t.Errorf("no samples kept %v, want nothing", empty.dists)
	}
}
