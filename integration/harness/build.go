package harness

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/regcenter/registry/internal/proc"
)

// BinaryEnv names an environment variable that, when set, is the path of a
// registry-node binary to use instead of building one (for CI, which builds
// once for all suites).
const BinaryEnv = "REGCENTER_TEST_NODE_BINARY"

// buildTimeout bounds one go build of the node. It is not tied to the context
// of the test that happens to build first: every test of the binary shares
// the result.
const buildTimeout = 10 * time.Minute

var build struct {
	once sync.Once
	dir  string // temporary directory holding the binary
	path string
	err  error
}

// Build returns the path of a registry-node binary built from this module's
// ./cmd/registry-node. It builds once per test binary (without -race, for
// speed) into a temporary directory that RemoveBuild deletes; every later call
// returns the same path, or fails the same way. If BinaryEnv is set, Build
// returns its value and builds nothing.
func Build(t testing.TB) string {
	t.Helper()
	if path := os.Getenv(BinaryEnv); path != "" {
		return path
	}
	build.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		build.dir, build.path, build.err = proc.Build(ctx, "./cmd/registry-node", "registry-node")
	})
	if build.err != nil {
		t.Fatalf("build registry-node: %v", build.err)
	}
	return build.path
}

// RemoveBuild deletes the directory Build compiled into. Call it once the
// test binary's tests are done (from TestMain).
func RemoveBuild() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}
