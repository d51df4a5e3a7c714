package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/regcenter/registry/internal/poll"
	"github.com/regcenter/registry/node/nodetest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// testdata is absolute: a test may change its working directory.
var testdata, _ = filepath.Abs("testdata")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, nodetest.LeakOptions()...) }

// golden is one command line and the name of the file holding what it
// prints and its exit status.
type golden struct {
	name string
	args []string
}

// ctl runs registryctl in-process and returns stdout, stderr and the exit
// status.
func ctl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, strings.NewReader(""), &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

// normalizers make a transcript independent of ports, indexes, terms,
// times and Raft's in-memory addresses.
var normalizers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`127\.0\.0\.1:\d{5}`), "127.0.0.1:PORT"},
	{regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`), "UUID"},
	{regexp.MustCompile(`index \d+`), "index N"},
	{regexp.MustCompile(`(term|applied index|commit index|last log index):( +)\d+`), "${1}:${2}N"},
	{regexp.MustCompile(`"(index|create_index|modify_index|last_beat_index|term|applied_index|commit_index|last_log_index)": "\d+"`), `"${1}": "N"`},
	{regexp.MustCompile(`"\d{4}-\d\d-\d\dT[0-9:.]+Z"`), `"TIME"`},
	{regexp.MustCompile(`(failover fence remaining|clock skew):( +)\S+`), "${1}:${2}DURATION"},
	{regexp.MustCompile(`\(\d+ bytes\)`), "(N bytes)"},
	{regexp.MustCompile(`(true|false)( +)(\d+|-)\n`), "${1}${2}LAG\n"}, // cluster members
	{regexp.MustCompile(`(beat key \(UDP beats, base64\): |"beat_key": ")[A-Za-z0-9+/=]{44}`), "${1}KEY"},
}

// ages are the last-beat ages of an instances table, whose column width
// moves with them.
var ages = regexp.MustCompile(`[0-9.]+(ns|µs|ms|s|m|h)+ ago`)

func normalize(s string) string {
	for _, n := range normalizers {
		s = n.re.ReplaceAllString(s, n.with)
	}
	lines := strings.SplitAfter(s, "\n")
	for i, line := range lines {
		if strings.Contains(line, "LAST BEAT") || ages.MatchString(line) {
			lines[i] = strings.Join(strings.Fields(ages.ReplaceAllString(line, "AGE-ago")), " ") + "\n"
		}
	}
	return strings.Join(lines, "")
}

// checkGolden runs each command line in order and compares its transcript
// with testdata/<name>.golden (go test -update rewrites them).
func checkGolden(t *testing.T, cases []golden) {
	t.Helper()
	for _, g := range cases {
		stdout, stderr, code := ctl(t, g.args...)
		got := normalize(fmt.Sprintf("$ registryctl %s\n%s--- stderr\n%s--- exit %d\n", strings.Join(g.args, " "), stdout, stderr, code))
		path := filepath.Join(testdata, g.name+".golden")
		if *update {
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -update to create it)", err)
		}
		if diff := cmp.Diff(string(want), got); diff != "" {
			t.Errorf("%s: registryctl %s (-want +got):\n%s", g.name, strings.Join(g.args, " "), diff)
		}
	}
}

// newCluster starts an in-process cluster led by n1 and points
// REGISTRY_ENDPOINTS at it, n1 first.
func newCluster(t *testing.T) *nodetest.Cluster {
	t.Helper()
	c := nodetest.New(t, 3, nil)
	t.Setenv(endpointsEnv, strings.Join(c.Endpoints(), ","))
	if c.Leader() != 0 {
		if _, stderr, code := ctl(t, "cluster", "transfer-leader", "n1"); code != exitOK {
			t.Fatalf("transfer-leader n1: %s", stderr)
		}
	}
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if c.Leader() != 0 {
			return fmt.Errorf("n%d leads", c.Leader()+1)
		}
		stdout, stderr, _ := ctl(t, "cluster", "members")
		if strings.Count(stdout, "127.0.0.1:") != 3 {
			return fmt.Errorf("not every member's address is published yet:\n%s%s", stdout, stderr)
		}
		return nil
	})
	return c
}

func TestCommandsAgainstACluster(t *testing.T) {
	newCluster(t)
	checkGolden(t, []golden{
		{"register", []string{"register", "orders", "o1", "10.0.0.1:8080", "--meta", "zone=a", "--beat-interval", "10s", "--ttl", "1h"}},
		{"register-json", []string{"-o", "json", "register", "orders", "o2", "10.0.0.2:8080", "--ttl", "1h", "--beat-interval", "10s"}},
		{"register-invalid", []string{"register", "orders", "o3", "not-an-address"}},
		{"register-bad-meta", []string{"register", "orders", "o3", "10.0.0.3:80", "--meta", "zone"}},
		{"services", []string{"services"}},
		{"services-json", []string{"services", "-o", "json", "--consistency", "linearizable"}},
		{"instances", []string{"instances", "orders"}},
		{"instances-unknown-service", []string{"instances", "nothing-here"}},
		{"beat", []string{"beat", "orders", "o1"}},
		{"beat-rejected", []string{"beat", "orders", "ghost"}},
		{"beat-fenced", []string{"beat", "orders", "o1", "--incarnation", "7"}},
		{"deregister", []string{"deregister", "orders", "o2"}},
		{"deregister-missing", []string{"deregister", "orders", "o2"}},
		{"cluster-status", []string{"cluster", "status"}},
		{"cluster-members", []string{"cluster", "members"}},
		{"guard-status", []string{"guard", "status"}},
		{"guard-override", []string{"guard", "override"}},
		{"cluster-remove-unknown", []string{"cluster", "remove", "bad id"}},
		{"cluster-remove-not-a-member", []string{"cluster", "remove", "n9"}},
		{"cluster-promote-not-a-member", []string{"cluster", "promote", "n9"}},
		{"cluster-demote-the-leader", []string{"cluster", "demote", "n1"}},
		{"cluster-demote-a-voter-of-three", []string{"cluster", "demote", "n2"}},
		{"failover-to-the-next-endpoint", []string{"--endpoints", "127.0.0.1:1," + strings.Split(os.Getenv(endpointsEnv), ",")[1], "services"}},
		{"no-endpoint-reachable", []string{"--endpoints", "127.0.0.1:1,127.0.0.1:2", "services"}},
	})
}

func TestUsage(t *testing.T) {
	checkGolden(t, []golden{
		{"help", []string{"--help"}},
		{"help-instances", []string{"instances", "--help"}},
		{"help-snapshot", []string{"snapshot", "--help"}},
		{"usage-missing-argument", []string{"instances"}},
		{"usage-unknown-command", []string{"frobnicate"}},
		{"usage-bad-output", []string{"-o", "yaml", "services"}},
		{"usage-bad-flag", []string{"services", "--colour"}},
		{"usage-bad-consistency", []string{"services", "--consistency", "eventual"}},
	})
	// Every command has its own help.
	for _, args := range [][]string{{"services"}, {"watch"}, {"register"}, {"deregister"}, {"beat"}, {"cluster", "status"},
		{"cluster", "members"}, {"cluster", "transfer-leader"}, {"cluster", "remove"}, {"cluster", "promote"}, {"cluster", "demote"}, {"guard", "status"},
		{"guard", "override"}, {"snapshot", "save"}, {"snapshot", "restore"}} {
		stdout, _, code := ctl(t, append(args, "--help")...)
		if code != exitOK || !strings.Contains(stdout, "Usage:\n  registryctl "+strings.Join(args, " ")) {
			t.Errorf("registryctl %s --help: exit %d\n%s", strings.Join(args, " "), code, stdout)
		}
	}
}

func TestSnapshotSaveThenRestoreIntoAnEmptyCluster(t *testing.T) {
	newCluster(t)
	for i := range 20 {
		if _, stderr, code := ctl(t, "register", "svc"+fmt.Sprint(i%3), fmt.Sprintf("i%02d", i), fmt.Sprintf("10.0.0.%d:80", i), "--ttl", "1h", "--beat-interval", "10s"); code != exitOK {
			t.Fatal(stderr)
		}
	}
	before, _, _ := ctl(t, "-o", "json", "instances", "svc0")
	t.Chdir(t.TempDir())
	backup := "registry.snap"
	checkGolden(t, []golden{{"snapshot-save", []string{"snapshot", "save", backup}}})

	// An empty cluster of its own.
	newCluster(t)
	if stdout, _, _ := ctl(t, "services"); strings.Count(stdout, "\n") != 1 {
		t.Fatalf("the new cluster is not empty:\n%s", stdout)
	}
	checkGolden(t, []golden{
		{"snapshot-restore", []string{"snapshot", "restore", backup}},
		{"snapshot-restored-services", []string{"services"}},
	})
	after, _, _ := ctl(t, "-o", "json", "instances", "svc0")
	if normalize(before) != normalize(after) {
		t.Errorf("svc0 before the backup:\n%s\nafter the restore:\n%s", before, after)
	}
	checkGolden(t, []golden{
		{"snapshot-restore-missing-file", []string{"snapshot", "restore", "missing.snap"}},
	})
}

func TestWatchPrintsAResetThenEventsUntilInterrupted(t *testing.T) {
	newCluster(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr nodetest.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"watch", "orders"}, strings.NewReader(""), &stdout, &stderr) }()
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if !strings.Contains(stdout.String(), "RESET") {
			return fmt.Errorf("no reset yet: %q %q", stdout.String(), stderr.String())
		}
		return nil
	})
	if _, stderr, code := ctl(t, "register", "orders", "w1", "10.0.0.9:80"); code != exitOK {
		t.Fatal(stderr)
	}
	if _, stderr, code := ctl(t, "deregister", "orders", "w1"); code != exitOK {
		t.Fatal(stderr)
	}
	want := "N RESET 0 instances\nN REGISTERED orders/w1 10.0.0.9:80 healthy incarnation 1\nN DEREGISTERED orders/w1 10.0.0.9:80 healthy incarnation 1\n"
	indexes := regexp.MustCompile(`(?m)^\d+ `)
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if got := indexes.ReplaceAllString(stdout.String(), "N "); got != want {
			return fmt.Errorf("watch printed %q, want %q", got, want)
		}
		return nil
	})
	cancel() // Ctrl-C
	if code := <-done; code != exitOK || stderr.String() != "" {
		t.Errorf("interrupted watch: exit %d, stderr %q; want 0 and nothing", code, stderr.String())
	}
}

// A read replica is listed with the role replica and a lag; promote makes
// it a voter and demote a replica again.
func TestPromoteAndDemoteAReadReplica(t *testing.T) {
	c := newCluster(t)
	c.StartReplica(0, nil)
	role := func(want string) {
		t.Helper()
		poll.Eventually(t, 10*time.Second, func(context.Context) error {
			stdout, stderr, code := ctl(t, "cluster", "members")
			for _, line := range strings.Split(stdout, "\n") {
				if f := strings.Fields(line); len(f) == 7 && f[0] == "n4" {
					if f[4] != want || f[6] == "-" || f[3] == "-" && f[2] == "-" {
						return fmt.Errorf("n4 is listed as %q, want role %s and a lag", line, want)
					}
					return nil
				}
			}
			return fmt.Errorf("n4 is not listed (exit %d):\n%s%s", code, stdout, stderr)
		})
	}
	role("replica")
	stdout, stderr, code := ctl(t, "-o", "json", "cluster", "members")
	if code != exitOK || !strings.Contains(stdout, `"role": "replica"`) || strings.Count(stdout, `"lag": "`) != 4 {
		t.Errorf("cluster members -o json: exit %d, want every member with a lag and n4's role replica:\n%s%s", code, stdout, stderr)
	}
	if stdout, stderr, code := ctl(t, "cluster", "promote", "n4"); code != exitOK || !strings.HasPrefix(stdout, "n4 is a voter") {
		t.Fatalf("promote n4: exit %d\n%s%s", code, stdout, stderr)
	}
	role("voter")
	if stdout, stderr, code := ctl(t, "cluster", "demote", "n4"); code != exitOK || !strings.HasPrefix(stdout, "n4 is a read replica") {
		t.Fatalf("demote n4: exit %d\n%s%s", code, stdout, stderr)
	}
	role("replica")
}
