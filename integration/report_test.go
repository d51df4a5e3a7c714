package integration_test

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regcenter/registry/integration/check"
)

// reportEnv names a file that receives the fault suite's table (Markdown)
// when the test binary ends; `make soak` and .ci/run set it. With -v the
// table is also printed.
const reportEnv = "REGCENTER_REPORT"

// notApplicable marks a count a scenario does not measure.
const notApplicable = -1

// reportRow is one scenario's line of the fault suite's table.
type reportRow struct {
	Scenario string
	// Ops is the number of operations checked: linearizability-checked
	// calls, or beating instances for the liveness scenarios.
	Ops    int
	Faults int
	// Lost, FalseExpirations and StaleReads are counts, or notApplicable.
	Lost             int
	FalseExpirations int
	StaleReads       int
	// Detection is from an instance's last acknowledged beat to its
	// EXPIRED event; Failover from a fault that took the leader away to the
	// next acknowledged write. Zero N means not measured.
	Detection check.Latencies
	Failover  check.Latencies
	// failovers are the samples behind Failover (when it is not set), over
	// every round of the scenario.
	failovers []time.Duration
	Passed    bool
	Duration  time.Duration
}

var suiteReport struct {
	mu   sync.Mutex
	rows []reportRow
}

// startScenario starts timing a scenario. The function it returns logs the
// scenario's row and adds it to the suite's table; whether the scenario
// passed is taken when the test ends.
func startScenario(t *testing.T) func(reportRow) {
	began := time.Now()
	return func(r reportRow) {
		t.Helper()
		r.Duration = time.Since(began)
		if r.Failover.N == 0 {
			r.Failover = check.Percentiles(r.failovers)
		}
		t.Logf("REPORT %s", r.line())
		suiteReport.mu.Lock()
		i := len(suiteReport.rows)
		suiteReport.rows = append(suiteReport.rows, r)
		suiteReport.mu.Unlock()
		t.Cleanup(func() {
			suiteReport.mu.Lock()
			defer suiteReport.mu.Unlock()
			suiteReport.rows[i].Passed = !t.Failed()
		})
	}
}

// add sums o's counts into r (a scenario of several rounds).
func (r *reportRow) add(o reportRow) {
	r.Ops += o.Ops
	r.Faults += o.Faults
	sum := func(a *int, b int) {
		if *a != notApplicable && b != notApplicable {
			*a += b
		}
	}
	sum(&r.Lost, o.Lost)
	sum(&r.FalseExpirations, o.FalseExpirations)
	sum(&r.StaleReads, o.StaleReads)
	r.failovers = append(r.failovers, o.failovers...)
}

// reportRounds runs a scenario's rounds (see rounds), each returning its
// row, and reports their sum: sum names the scenario and marks what it
// does not measure.
func reportRounds(t *testing.T, report func(reportRow), sum reportRow, n int, share float64, round func(i int) reportRow) reportRow {
	t.Helper()
	rounds(t, n, share, func(i int) { sum.add(round(i)) })
	report(sum)
	return sum
}

func count(n int) string {
	if n == notApplicable {
		return "n/a"
	}
	return fmt.Sprint(n)
}

func lat(l check.Latencies) string {
	if l.N == 0 {
		return "n/a"
	}
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return fmt.Sprintf("%s / %s / %s (n=%d)", r(l.P50), r(l.P99), r(l.Max), l.N)
}

func (r reportRow) line() string {
	return fmt.Sprintf("scenario=%s ops=%d faults=%d lost=%s false_expirations=%s stale_reads=%s detection{%s} failover{%s}",
		r.Scenario, r.Ops, r.Faults, count(r.Lost), count(r.FalseExpirations), count(r.StaleReads), lat(r.Detection), lat(r.Failover))
}

// writeReport writes the table in Markdown.
func writeReport(w io.Writer) {
	suiteReport.mu.Lock()
	defer suiteReport.mu.Unlock()
	if len(suiteReport.rows) == 0 {
		return
	}
	fmt.Fprintln(w, "| scenario | result | time | operations checked | faults | acked writes lost | false expirations | stale reads | detection p50 / p99 / max | failover p50 / p99 / max |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range suiteReport.rows {
		result := "FAIL"
		if r.Passed {
			result = "pass"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %d | %d | %s | %s | %s | %s | %s |\n",
			r.Scenario, result, r.Duration.Round(time.Second), r.Ops, r.Faults, count(r.Lost), count(r.FalseExpirations),
			count(r.StaleReads), lat(r.Detection), lat(r.Failover))
	}
}

// flushReport prints the table (seen with -v) and writes it to
// $REGCENTER_REPORT when set.
func flushReport() {
	var b strings.Builder
	writeReport(&b)
	if b.Len() == 0 {
		return
	}
	fmt.Printf("\nFault suite report:\n\n%s\n", b.String())
	if path := os.Getenv(reportEnv); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "writing %s: %v\n", path, err)
		}
	}
}
