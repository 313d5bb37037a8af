package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/raftproxy/raftproxy/entry"
)

// TestRollingUpgrade runs a cluster of the build before the last entry
// format change (built from git history) under the chaos workload, and
// upgrades it one node at a time to this tree's build, with a rollback
// before and after the cluster's format moves. The workload's histories
// (registers, list appends, counters, deadlines) are checked across the
// whole upgrade, and every node's redis must end identical, without the
// write of any script killed on the way.
//
// What it shows, step by step:
//   - mixed builds write the older format: log_format stays at the old
//     build's until the last old member is upgraded, so no old member ever
//     receives an entry it cannot decode (otherwise it would halt, and
//     its reads fail);
//   - an upgraded node rolled back before that point rejoins as if nothing
//     happened;
//   - once every member runs the new build, the format moves on every node;
//   - a node rolled back after that stops applying at the first entry it
//     cannot decode (-CLUSTERDOWN, never a skipped entry) while the others
//     serve, and applies the rest once upgraded again.
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds an earlier commit and runs a workload for a minute")
	}
	ctx := testContext(t, 8*time.Minute)
	oldBin, oldCommit := buildPreviousFormat(t)
	oldFormat := entry.Version - 1
	t.Logf("old build: commit %.12s, entry format %d; new build: this tree, format %d", oldCommit, oldFormat, entry.Version)

	c := StartCluster(ctx, t, ClusterOptions{Bin: oldBin, RequestTimeout: 2 * time.Second,
		ExtraArgs: []string{"--snapshot-entries", "3000", "--snapshot-catchup-entries", "1000"}})
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	checkFormats(ctx, t, c, oldFormat, map[*Node]int{c.Nodes[0]: oldFormat, c.Nodes[1]: oldFormat, c.Nodes[2]: oldFormat})

	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.Addr)
	}
	const seed = 23
	w := startWorkload(seed, 6, addrs, nil)
	step := func(format string, args ...any) {
		t.Logf("%6.2fs upgrade: %s", time.Since(w.start).Seconds(), fmt.Sprintf(format, args...))
	}
	restart := func(n *Node, bin string) {
		t.Helper()
		if err := n.StopProxy(20 * time.Second); err != nil {
			t.Fatal(err)
		}
		n.Bin = bin
		if err := n.StartProxy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	serving := func(n *Node) {
		t.Helper()
		if err := waitFor(ctx, 30*time.Second, 100*time.Millisecond, n.String()+" serving reads", func(ctx context.Context) error {
			v, err := n.Do(ctx, 2*time.Second, "GET", "upgrade:probe")
			if err == nil && v.Kind == '-' {
				err = fmt.Errorf("GET answered -%s", v.Str)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Between steps, a never-ending script is run and killed through the
	// log (killable requests, settle and abort control entries), in
	// whichever format the cluster writes then.
	if err := prepareScripts(ctx, c); err != nil {
		t.Fatal(err)
	}
	nm := &nemesis{c: c, rng: rand.New(rand.NewPCG(seed, 0x7570)), kinds: []string{"script"}, w: w, size: 3,
		logf: func(format string, args ...any) { step(format, args...) }}
	pause := func() {
		nm.runaway(ctx)
		nm.count++
		sleep(ctx, 2*time.Second)
	}
	pause()

	step("node0 to the new build")
	restart(c.Nodes[0], raftproxyBin)
	serving(c.Nodes[0])
	checkFormats(ctx, t, c, oldFormat, map[*Node]int{c.Nodes[0]: entry.Version, c.Nodes[1]: oldFormat, c.Nodes[2]: oldFormat})
	pause()
	serving(c.Nodes[1])
	serving(c.Nodes[2])

	step("node0 rolled back to the old build, before the format moved")
	restart(c.Nodes[0], oldBin)
	serving(c.Nodes[0])
	checkFormats(ctx, t, c, oldFormat, map[*Node]int{c.Nodes[0]: oldFormat, c.Nodes[1]: oldFormat, c.Nodes[2]: oldFormat})
	pause()

	for i, n := range c.Nodes {
		step("%s to the new build", n)
		restart(n, raftproxyBin)
		serving(n)
		want := map[*Node]int{}
		for j, m := range c.Nodes {
			want[m] = oldFormat
			if j <= i {
				want[m] = entry.Version
			}
		}
		cluster := oldFormat
		if i == len(c.Nodes)-1 {
			cluster = entry.Version
		}
		checkFormats(ctx, t, c, cluster, want)
		for _, m := range c.Nodes[i+1:] {
			// An old member serves throughout: it has not met an entry
			// it cannot decode.
			serving(m)
		}
		pause()
	}
	step("every node runs the new build: the log is written in format %d", entry.Version)
	sleep(ctx, 5*time.Second)

	last := c.Nodes[len(c.Nodes)-1]
	step("%s rolled back to the old build, after the format moved", last)
	restart(last, oldBin)
	if err := waitFor(ctx, 30*time.Second, 100*time.Millisecond, last.String()+" refusing to serve past an entry it cannot decode", func(ctx context.Context) error {
		v, err := last.Do(ctx, 2*time.Second, "GET", "upgrade:probe")
		if err != nil || v.Kind != '-' || !strings.HasPrefix(v.Str, "CLUSTERDOWN") {
			return fmt.Errorf("GET answered %v, %v", v, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Nodes[:len(c.Nodes)-1] {
		serving(m)
	}
	pause()
	step("%s upgraded again", last)
	restart(last, raftproxyBin)
	serving(last)
	checkFormats(ctx, t, c, entry.Version, map[*Node]int{c.Nodes[0]: entry.Version, c.Nodes[1]: entry.Version, c.Nodes[2]: entry.Version})
	pause()
	w.Stop()

	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoScriptWrites(t, c.AssertRedisIdentical(ctx))
	lists, ctrs, err := w.finalReads(ctx, c.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	reportChaos(t, chaosConfig{Seed: seed, Duration: time.Since(w.start).Round(time.Second), Nemeses: []string{"rolling-upgrade"}, Nodes: 3, Clients: 6,
		Replay: "go test ./test -run TestRollingUpgrade -v"}, "loopback", 7, w, lists, ctrs)
}

// checkFormats waits until every node writes format cluster (RAFT.INFO
// log_format) and records each node's member format as want says.
func checkFormats(ctx context.Context, t *testing.T, c *Cluster, cluster int, want map[*Node]int) {
	t.Helper()
	err := waitFor(ctx, 20*time.Second, 100*time.Millisecond, fmt.Sprintf("log format %d on every node", cluster), func(ctx context.Context) error {
		byAddr := map[string]int{}
		for n, f := range want {
			byAddr[n.Addr] = f
		}
		for _, n := range c.Nodes {
			info, err := n.RaftInfo(ctx)
			if err != nil {
				return err
			}
			if f := info.Get("log_format"); f != strconv.Itoa(cluster) {
				return fmt.Errorf("%s: log_format %s", n, f)
			}
			for _, m := range info.Members {
				if f, ok := byAddr[m.Addr]; ok && m.Format != strconv.Itoa(f) {
					return fmt.Errorf("%s: member %s recorded with format %s, want %d", n, m.Addr, m.Format, f)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// buildPreviousFormat builds raftproxy as of the last commit before the
// entry format became this tree's, from git history, and returns the
// binary and the commit.
func buildPreviousFormat(t *testing.T) (bin, commit string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not found: %v", err)
	}
	root, err := repoRoot(goTool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is missing: the old build comes from this repository's history")
	}
	git := func(args ...string) (string, error) {
		out, err := exec.Command("git", append([]string{"-C", root}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	bump, err := git("log", "-1", "--format=%H", "-G", `^const version = `, "--", "entry/entry.go")
	if err != nil || bump == "" {
		t.Skipf("no git history of entry/entry.go's version (a shallow clone or an exported tree?): %v", err)
	}
	commit, err = git("rev-parse", bump+"^")
	if err != nil {
		t.Skipf("the commit before %.12s, which changed the entry format, is not in this clone (shallow?): %v", bump, err)
	}
	src, err := git("show", commit+":entry/entry.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^const version = (\d+)`).FindStringSubmatch(src)
	if m == nil || m[1] != strconv.Itoa(entry.Version-1) {
		t.Fatalf("commit %.12s writes entry format %v, want %d", commit, m, entry.Version-1)
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "src")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := exec.Command("sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh", root, commit, tree)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extracting commit %.12s: %v\n%s", commit, err, out)
	}
	bin = filepath.Join(dir, "raftproxy-"+commit[:12])
	bctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(bctx, goTool, "build", "-o", bin, "./cmd/raftproxy")
	build.Dir = tree
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building commit %.12s: %v\n%s", commit, err, out)
	}
	return bin, commit
}
