package main

import (
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := time.Millisecond
	sorted := []time.Duration{1 * ms, 2 * ms, 3 * ms, 4 * ms, 5 * ms, 6 * ms, 7 * ms, 8 * ms, 9 * ms, 10 * ms}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 5 * ms}, {0.99, 10 * ms}, {0.1, 1 * ms}, {0.11, 2 * ms}, {1, 10 * ms}} {
		if got := percentile(sorted, tc.p); got != tc.want {
			t.Errorf("percentile(1..10ms, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
}

func TestWeightedPercentile(t *testing.T) {
	ms := time.Millisecond
	// 98 beats at 10ms in one frame, 2 single beats at 500ms and 20ms.
	samples := []weighted{{500 * ms, 1}, {10 * ms, 98}, {20 * ms, 1}}
	if got := weightedPercentile(samples, 0.5); got != 10*ms {
		t.Errorf("p50 = %v, want 10ms", got)
	}
	if got := weightedPercentile(samples, 0.99); got != 20*ms {
		t.Errorf("p99 = %v, want 20ms", got)
	}
	if got := weightedPercentile(samples, 1); got != 500*ms {
		t.Errorf("p100 = %v, want 500ms", got)
	}
}

func TestReporterPrintsAJSONLinePerResultAndATable(t *testing.T) {
	var out strings.Builder
	rp := &reporter{out: &out}
	r := &result{Workload: "W2", Case: "64 workers", Params: map[string]any{"workers": 64}}
	r.add("registrations_per_s", 4500.5)
	r.addMs("latency_p99", 59400*time.Microsecond)
	rp.emit(r)
	line, _, _ := strings.Cut(out.String(), "\n")
	for _, want := range []string{`"workload":"W2"`, `"registrations_per_s":4500.5`, `"latency_p99_ms":59.4`, `"workers":64`} {
		if !strings.Contains(line, want) {
			t.Errorf("JSON line %s lacks %s", line, want)
		}
	}
	out.Reset()
	rp.table()
	if !strings.Contains(out.String(), "W2") || !strings.Contains(out.String(), "latency_p99_ms") {
		t.Errorf("table:\n%s\nlacks the result", out.String())
	}
}

func TestTheWeightedDistributionCountsBeatsNotFrames(t *testing.T) {
	ms := time.Millisecond
	// One frame of 90 beats at 10ms, one of 10 beats at 200ms.
	r := &result{}
	r.addWeightedDist("beat_latency", []weighted{{200 * ms, 10}, {10 * ms, 90}})
	q := r.dists["beat_latency"]
	if len(q) != distQuantiles+1 {
		t.Fatalf("%d quantiles, want %d", len(q), distQuantiles+1)
	}
	for _, tc := range []struct {
		at   float64
		want time.Duration
	}{{0, 10 * ms}, {0.5, 10 * ms}, {0.9, 10 * ms}, {0.91, 200 * ms}, {1, 200 * ms}} {
		if got := q[int(tc.at*distQuantiles)]; got != tc.want {
			t.Errorf("quantile %v = %v, want %v", tc.at, got, tc.want)
		}
	}
}

func TestTheScaleSectionSaysWhichTargetIsMissedAndWhichIsNotMeasured(t *testing.T) {
	var out strings.Builder
	rp := &reporter{out: &out}
	r := &result{Workload: "SCALE", Case: "1000000 instances", Params: map[string]any{}}
	r.addMs("beat_latency_p99", 140*time.Millisecond)
	r.add("false_expirations_watched", int64(0))
	r.add("bytes_per_instance_n1", int64(900))
	r.add("registrations_per_s", 5800.5)
	rp.emit(r)
	out.Reset()
	rp.table()
	i := strings.Index(out.String(), "SCALE 1000000 instances: against the targets")
	if i < 0 {
		t.Fatalf("no scale section:\n%s", out.String())
	}
	// One space between columns, whatever their widths.
	var lines []string
	for l := range strings.Lines(out.String()[i:]) {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	section := strings.Join(lines, "\n")
	for _, want := range []string{
		"beat_latency_p99_ms 140 ≤ 100 ms MISSED",
		"false_expirations_watched 0 0 met",
		"bytes_per_instance_n1 900 ≤ 1024 met",
		"bytes_per_instance_n2 - ≤ 1024 not measured",
		"registrations_per_s 5800.5",
	} {
		if !strings.Contains(section, want) {
			t.Errorf("the scale section lacks %q:\n%s", want, section)
		}
	}
}
