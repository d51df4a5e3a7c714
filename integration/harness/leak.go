package harness

import (
	"go.uber.org/goleak"

	"github.com/regcenter/registry/internal/proc"
)

// LeakOptions returns the goleak options that ignore the goroutines the
// harness keeps for the whole test binary on purpose (the process spawner, see
// doc.go). Pass them to goleak.VerifyTestMain or goleak.VerifyNone.
func LeakOptions() []goleak.Option {
	if proc.SpawnerFunction == "" {
		return nil
	}
	return []goleak.Option{goleak.IgnoreAnyFunction(proc.SpawnerFunction)}
}
