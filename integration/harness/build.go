package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
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
		build.dir, build.path, build.err = buildPackage("./cmd/registry-node", "registry-node")
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

// buildPackage builds the main package pkg (relative to the module root)
// into a new temporary directory as name.
func buildPackage(pkg, name string) (dir, path string, err error) {
	root, err := moduleRoot()
	if err != nil {
		return "", "", err
	}
	dir, err = os.MkdirTemp("", name+"-build-")
	if err != nil {
		return "", "", err
	}
	path = filepath.Join(dir, name)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return dir, "", fmt.Errorf("go build %s in %s: %w\n%s", pkg, root, err, out)
	}
	return dir, path, nil
}

// moduleRoot asks the go command for the main module's go.mod and falls back
// to walking up from the working directory (the test's package directory).
func moduleRoot() (string, error) {
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		gomod := strings.TrimSpace(string(out))
		if gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod found above the working directory")
		}
		dir = parent
	}
}
