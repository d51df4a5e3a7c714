package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// The plots --plots writes, each only when its workload has results.
const (
	plotW1     = "w1-p99.svg"       // W1 beat latency p99 against instances, a line per mode
	plotW2     = "w2-latency.svg"   // W2 registration latency CDF
	plotW5     = "w5-delivery.svg"  // W5 delivery time CDF, a line per watcher count
	plotScale  = "scale-beats.svg"  // the scale workload's beat latency CDF over the hold
	plotWidth  = 16 * vg.Centimeter // size of every plot
	plotHeight = 10 * vg.Centimeter
)

// writePlots writes into dir the plots of the workloads in results and
// returns the paths written.
func writePlots(dir string, results []*result) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var written []string
	for _, pl := range []struct {
		name string
		make func([]*result) (*plot.Plot, error)
	}{{plotW1, w1Plot}, {plotW2, w2Plot}, {plotW5, w5Plot}, {plotScale, scalePlot}} {
		p, err := pl.make(results)
		if err != nil {
			return written, fmt.Errorf("%s: %w", pl.name, err)
		}
		if p == nil {
			continue // the workload did not run
		}
		path := filepath.Join(dir, pl.name)
		if err := p.Save(plotWidth, plotHeight, path); err != nil {
			return written, fmt.Errorf("%s: %w", pl.name, err)
		}
		written = append(written, path)
	}
	return written, nil
}

// w1Plot is the W1 beat latency p99 against the instance count, one line
// per mode, with --w1-max-p99 as a dashed line; nil without
// W1 steps that measured a p99.
func w1Plot(results []*result) (*plot.Plot, error) {
	byMode := map[string]plotter.XYs{}
	var modes []string
	limit, maxP99 := 0.0, 0.0
	for _, r := range results {
		if r.Workload != "W1" {
			continue
		}
		if v, ok := r.Params["max_p99_ms"].(float64); ok {
			limit = v // on the capacity results
		}
		mode, _ := r.Params["mode"].(string)
		n, okN := r.Params["instances"].(int)
		p99, okP := r.metric("beat_latency_p99_ms")
		if mode == "" || !okN || !okP {
			continue // a capacity result, or a step that failed before its hold
		}
		if _, seen := byMode[mode]; !seen {
			modes = append(modes, mode)
		}
		byMode[mode] = append(byMode[mode], plotter.XY{X: float64(n), Y: p99})
		maxP99 = max(maxP99, p99)
	}
	if len(modes) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = "W1: beat latency p99 against live instances (1 beat/s each)"
	p.X.Label.Text = "instances"
	p.Y.Label.Text = "beat latency p99 (ms)"
	p.X.Min, p.Y.Min = 0, 0 // room for the legend
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	var lines []any
	for _, m := range modes {
		xys := byMode[m]
		slices.SortFunc(xys, func(a, b plotter.XY) int { return int(a.X - b.X) })
		lines = append(lines, m, xys)
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return nil, err
	}
	// The limit, unless it is far above every point (it would flatten
	// them).
	if limit > 0 && limit <= 3*maxP99 {
		xmin, xmax := p.X.Min, p.X.Max
		l, err := plotter.NewLine(plotter.XYs{{X: xmin, Y: limit}, {X: xmax, Y: limit}})
		if err != nil {
			return nil, err
		}
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("limit %g ms", limit), l)
		maxP99 = max(maxP99, limit)
	}
	p.Y.Max = 1.3 * maxP99 // headroom for the legend
	return p, nil
}

// w2Plot is the CDF of the W2 registration latency, one line per case;
// nil without W2 results.
func w2Plot(results []*result) (*plot.Plot, error) {
	return cdfPlot(results, "W2", "latency",
		"W2: registration latency (CDF)", "Register latency (ms)")
}

// w5Plot is the CDF of the W5 delivery time (Register call to event), one
// line per watcher count; nil without W5 results.
func w5Plot(results []*result) (*plot.Plot, error) {
	return cdfPlot(results, "W5", "delivery",
		"W5: watch delivery time, Register call to event (CDF)", "delivery time (ms)")
}

// scalePlot is the CDF of the scale workload's beat latency over its
// hold (weighted by beats); nil without a scale result.
func scalePlot(results []*result) (*plot.Plot, error) {
	return cdfPlot(results, "SCALE", "beat_latency",
		"scale: beat latency over the hold (CDF)", "beat latency, frame sent to answer (ms)")
}

// cdfPlot draws the distribution dist of each result of workload as a
// CDF, labelled by the result's case; nil if there is none.
func cdfPlot(results []*result, workload, dist, title, xlabel string) (*plot.Plot, error) {
	var lines []any
	for _, r := range results {
		q, ok := r.dists[dist]
		if r.Workload != workload || !ok {
			continue
		}
		xys := make(plotter.XYs, len(q))
		for i, d := range q {
			xys[i] = plotter.XY{X: float64(d) / float64(time.Millisecond), Y: float64(i) / float64(len(q)-1)}
		}
		lines = append(lines, r.Case, xys)
	}
	if len(lines) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = "fraction of calls within"
	switch workload {
	case "W5":
		p.Y.Label.Text = "fraction of deliveries within"
	case "SCALE":
		p.Y.Label.Text = "fraction of beats within"
	}
	p.X.Min, p.Y.Min, p.Y.Max = 0, 0, 1
	p.Legend.Top, p.Legend.Left = true, true // a CDF rises from bottom left to top right
	p.Add(plotter.NewGrid())
	if err := plotutil.AddLines(p, lines...); err != nil {
		return nil, err
	}
	return p, nil
}

// metric returns the value of the float metric name.
func (r *result) metric(name string) (float64, bool) {
	for _, m := range r.metrics {
		if m.name == name {
			v, ok := m.value.(float64)
			return v, ok
		}
	}
	return 0, false
}
