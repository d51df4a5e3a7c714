package integration_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/regcenter/registry/integration/harness"
)

func TestMain(m *testing.M) {
	opts := append(harness.LeakOptions(), goleak.Cleanup(func(code int) {
		flushReport()
		harness.RemoveBuild()
		os.Exit(code)
	}))
	goleak.VerifyTestMain(m, opts...)
}
