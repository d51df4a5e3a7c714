package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/regcenter/registry/integration/harness"
)

// readmeCurls returns the curl commands of the first sh block of the
// README's "## HTTP API" section, continuation lines joined.
func readmeCurls(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		cmds             []string
		section, inBlock bool
		current          string
	)
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		line := lines.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			section = line == "## HTTP API"
		case section && line == "```sh":
			inBlock = true
		case inBlock && line == "```":
			return cmds
		case inBlock && (current != "" || strings.HasPrefix(line, "curl ")):
			current += strings.TrimSuffix(line, `\`)
			if !strings.HasSuffix(line, `\`) {
				cmds = append(cmds, current)
				current = ""
			}
		}
	}
	t.Fatal("README.md has no sh block under ## HTTP API")
	return nil
}

// The README's curl examples work as written against a cluster: a client
// that has nothing but curl can register, beat, discover, watch and
// deregister.
func TestTheREADMECurlExamplesWork(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed: skipping the README's curl examples")
	}
	cmds := readmeCurls(t)
	if len(cmds) < 6 {
		t.Fatalf("found %d curl commands in the README's HTTP API section: %q", len(cmds), cmds)
	}
	c := harness.Start(t, harness.Options{})
	waitLeader(t, c)
	// make run's addresses are this cluster's.
	var addrs []string
	for i, n := range c.Nodes() {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:720%d", i+1), n.HTTPAddr())
	}
	replacer := strings.NewReplacer(addrs...)

	for _, cmd := range cmds {
		watch := strings.Contains(cmd, "/watch")
		line := replacer.Replace(strings.Replace(cmd, "curl ", curl+" --fail-with-body ", 1))
		if watch {
			line = strings.Replace(line, " -sSN ", " -sSN --max-time 2 ", 1)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		out, err := exec.CommandContext(ctx, "sh", "-c", line).Output()
		cancel()
		var exit *exec.ExitError
		if watch && errors.As(err, &exit) && exit.ExitCode() == 28 {
			err = nil // --max-time ended the stream, as Ctrl-C would
		}
		if err != nil {
			t.Errorf("%s: %v\n%s", cmd, err, out)
			continue
		}
		for _, doc := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var v map[string]any
			if err := json.Unmarshal([]byte(doc), &v); err != nil {
				t.Errorf("%s: output is not JSON: %q", cmd, doc)
			}
			if watch && v["result"] == nil {
				t.Errorf("%s: watch line %q has no result", cmd, doc)
			}
		}
		if strings.Contains(cmd, "/v1/beat") && strings.Contains(string(out), "BEAT_REJECT") {
			t.Errorf("%s: the beat was rejected: %s", cmd, out)
		}
	}
}
