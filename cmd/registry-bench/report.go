package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// result is one measured case of a workload: a JSON line as soon as it is
// known, and rows of the final table.
type result struct {
	Workload string
	Case     string
	Params   map[string]any
	metrics  []metric
	// dists holds, per addDist name, the latency at quantiles 0, 1/q, 2/q
	// … 1 (q = distQuantiles): a bounded picture of the distribution for
	// the plots (plots.go).
	dists map[string][]time.Duration
}

// distQuantiles is how many steps a result keeps of each distribution.
const distQuantiles = 200

type metric struct {
	name  string // with its unit: latency_p99_ms
	value any    // float64, int, string
}

func (r *result) add(name string, value any) { r.metrics = append(r.metrics, metric{name, value}) }

func (r *result) addMs(name string, d time.Duration) { r.add(name+"_ms", ms(d)) }

// ms is d in milliseconds, rounded to 0.1.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e5) / 10 }

func round1(f float64) float64 { return math.Round(f*10) / 10 }

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// reporter prints JSON lines as results come and the table at the end.
type reporter struct {
	out     io.Writer
	results []*result
}

func (rp *reporter) emit(r *result) {
	rp.results = append(rp.results, r)
	// The machine is shared: record how busy it was.
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if l, err := strconv.ParseFloat(f[0], 64); err == nil {
				r.add("loadavg_1m", l)
			}
		}
	}
	m := make(map[string]any, len(r.metrics))
	for _, x := range r.metrics {
		m[x.name] = x.value
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // "p99 187ms > 100ms" stays readable
	err := enc.Encode(struct {
		Workload string         `json:"workload"`
		Case     string         `json:"case"`
		Params   map[string]any `json:"params"`
		Metrics  map[string]any `json:"metrics"`
	}{r.Workload, r.Case, r.Params, m})
	if err != nil {
		buf.Reset()
		fmt.Fprintf(&buf, "{\"error\": %q}\n", err.Error())
	}
	rp.out.Write(buf.Bytes())
}

func (rp *reporter) table() {
	tw := tabwriter.NewWriter(rp.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tCASE\tMETRIC\tVALUE")
	for _, r := range rp.results {
		for i, x := range r.metrics {
			w, c := r.Workload, r.Case
			if i > 0 {
				w, c = "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", w, c, x.name, x.value)
		}
	}
	tw.Flush()
	rp.scaleSection()
}

// percentile returns the p-quantile (0 < p ≤ 1, nearest rank) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// addDist adds p50, p99 and max of samples (sorted in place) as name_*.
func (r *result) addDist(name string, samples []time.Duration) {
	slices.Sort(samples)
	if len(samples) > 0 {
		q := make([]time.Duration, distQuantiles+1)
		for i := range q {
			q[i] = percentile(samples, float64(i)/distQuantiles)
		}
		if r.dists == nil {
			r.dists = map[string][]time.Duration{}
		}
		r.dists[name] = q
	}
	r.addMs(name+"_p50", percentile(samples, 0.50))
	r.addMs(name+"_p99", percentile(samples, 0.99))
	if len(samples) > 0 {
		r.addMs(name+"_max", samples[len(samples)-1])
	}
}

// weighted is a latency sample standing for n beats.
type weighted struct {
	lat time.Duration
	n   int
}

// weightedPercentile is the p-quantile over the beats of samples, sorted
// in place by latency.
func weightedPercentile(samples []weighted, p float64) time.Duration {
	slices.SortFunc(samples, func(a, b weighted) int { return int(a.lat - b.lat) })
	total := 0
	for _, s := range samples {
		total += s.n
	}
	if total == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(total)))
	seen := 0
	for _, s := range samples {
		seen += s.n
		if seen >= rank {
			return s.lat
		}
	}
	return samples[len(samples)-1].lat
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// addWeightedDist keeps the distribution of samples (sorted in place) for
// the plots under name, as addDist does for unweighted samples.
func (r *result) addWeightedDist(name string, samples []weighted) {
	slices.SortFunc(samples, func(a, b weighted) int { return int(a.lat - b.lat) })
	total := 0
	for _, s := range samples {
		total += s.n
	}
	if total == 0 {
		return
	}
	q := make([]time.Duration, distQuantiles+1)
	seen, j := 0, 0
	for i := range q {
		rank := max(1, int(math.Ceil(float64(i)/distQuantiles*float64(total))))
		for j < len(samples)-1 && seen+samples[j].n < rank {
			seen += samples[j].n
			j++
		}
		q[i] = samples[j].lat
	}
	if r.dists == nil {
		r.dists = map[string][]time.Duration{}
	}
	r.dists[name] = q
}

// scaleTargets are issue 16's targets for the scale workload: a metric,
// whether a value passes, and the target in words.
var scaleTargets = []struct {
	metric string
	ok     func(float64) bool
	want   string
}{
	{"beat_latency_p99_ms", func(v float64) bool { return v <= 100 }, "≤ 100 ms"},
	{"false_expirations_watched", func(v float64) bool { return v == 0 }, "0"},
	{"expired_counted_by_nodes", func(v float64) bool { return v == 0 }, "0"},
	{"leader_changes_during_hold", func(v float64) bool { return v == 0 }, "0"},
	{"bytes_per_instance_n1", func(v float64) bool { return v <= 1024 }, "≤ 1024"},
	{"bytes_per_instance_n2", func(v float64) bool { return v <= 1024 }, "≤ 1024"},
	{"bytes_per_instance_n3", func(v float64) bool { return v <= 1024 }, "≤ 1024"},
}

// scaleSection prints, for each SCALE result, its figures against the
// issue's targets (met or missed, and by how much) and the other figures
// as they are.
func (rp *reporter) scaleSection() {
	for _, r := range rp.results {
		if r.Workload != "SCALE" {
			continue
		}
		fmt.Fprintf(rp.out, "\nSCALE %s: against the targets\n", r.Case)
		tw := tabwriter.NewWriter(rp.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "METRIC\tVALUE\tTARGET\t")
		targeted := map[string]bool{}
		for _, t := range scaleTargets {
			targeted[t.metric] = true
			v, ok := r.number(t.metric)
			switch {
			case !ok:
				fmt.Fprintf(tw, "%s\t-\t%s\tnot measured\n", t.metric, t.want)
			case t.ok(v):
				fmt.Fprintf(tw, "%s\t%v\t%s\tmet\n", t.metric, v, t.want)
			default:
				fmt.Fprintf(tw, "%s\t%v\t%s\tMISSED\n", t.metric, v, t.want)
			}
		}
		for _, m := range r.metrics {
			if !targeted[m.name] {
				fmt.Fprintf(tw, "%s\t%v\t\t\n", m.name, m.value)
			}
		}
		tw.Flush()
	}
}

// number returns metric name as a float, whatever its numeric type.
func (r *result) number(name string) (float64, bool) {
	for _, m := range r.metrics {
		if m.name != name {
			continue
		}
		switch v := m.value.(type) {
		case float64:
			return v, true
		case int:
			return float64(v), true
		case int64:
			return float64(v), true
		case uint64:
			return float64(v), true
		}
	}
	return 0, false
}
