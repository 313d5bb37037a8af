package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Small thresholds so a test crosses several snapshots quickly.
var snapArgs = []string{"--snapshot-entries", "100", "--snapshot-catchup-entries", "20"}

func logContains(t *testing.T, n *Node, text string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dir, "proxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), text)
}

func infoInt(ctx context.Context, t *testing.T, n *Node, key string) int64 {
	t.Helper()
	info, err := n.RaftInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.Int(key)
}

// TestCompactOnEachNode: RAFT.DEBUG COMPACT on every node under load stores
// a snapshot and compacts the log; data stays identical everywhere.
func TestCompactOnEachNode(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{ExtraArgs: []string{"--snapshot-catchup-entries", "10"}})
	leader, _ := c.Leader(ctx)
	if _, err := writeKeysIn(leader.Addr, "before", 1000, 100, 10); err != nil {
		t.Fatal(err)
	}
	load, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; load.Err() == nil && err == nil; i++ {
			_, err = writeKeys(c.Nodes[i%3].Addr, fmt.Sprintf("during%d", i), 50, 10)
		}
		done <- err
	}()
	for _, n := range c.Nodes {
		applied := infoInt(ctx, t, n, "last_applied_index")
		v, err := n.Do(ctx, time.Minute, "RAFT.DEBUG", "COMPACT")
		if err != nil || v.Kind != '+' || v.Str != "OK" {
			t.Fatalf("RAFT.DEBUG COMPACT on %s: %v %v", n, v, err)
		}
		snap := infoInt(ctx, t, n, "snapshot_last_index")
		if snap < applied {
			t.Errorf("%s: snapshot_last_index %d after COMPACT, want >= %d (applied before it)", n, snap, applied)
		}
		if first := infoInt(ctx, t, n, "first_log_index"); first < snap-10 || first <= 1 {
			t.Errorf("%s: first_log_index %d, want the log compacted to the snapshot (%d) less the 10 catch-up entries", n, first, snap)
		}
		rdbs, _ := filepath.Glob(filepath.Join(n.DataDir, "snap", "*.rdb"))
		if len(rdbs) == 0 {
			t.Errorf("%s: no snapshot file in its data dir", n)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("write load during compaction: %v", err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	c.AssertRedisIdentical(ctx)
}

// TestFollowerCatchesUpBySnapshot: followers that were down while the leader
// compacted its log past them several times get a snapshot, then the tail;
// with two of them the leader streams two snapshots at once.
func TestFollowerCatchesUpBySnapshot(t *testing.T) {
	for _, tt := range []struct {
		nodes, down int
	}{{3, 1}, {5, 2}} {
		t.Run(fmt.Sprintf("%d of %d nodes behind", tt.down, tt.nodes), func(t *testing.T) {
			ctx := testContext(t, 3*time.Minute)
			c := StartCluster(ctx, t, ClusterOptions{Nodes: tt.nodes, ExtraArgs: snapArgs})
			leader, followers := c.Leader(ctx)
			behind := followers[:tt.down]
			for _, f := range behind {
				if err := f.KillProxy(); err != nil {
					t.Fatal(err)
				}
			}
			sample, err := writeKeysIn(leader.Addr, "snap", 3000, 97, 5)
			if err != nil {
				t.Fatal(err)
			}
			if first := infoInt(ctx, t, leader, "first_log_index"); first < 300 {
				t.Fatalf("leader's first_log_index is %d: the log was not compacted past the followers", first)
			}
			for _, f := range behind {
				if err := f.StartProxy(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.WaitStable(ctx); err != nil {
				t.Fatal(err)
			}
			for _, f := range behind {
				if err := waitForReads(ctx, f, sample); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.WaitConverged(ctx); err != nil {
				t.Fatal(err)
			}
			if got := len(c.AssertRedisIdentical(ctx)); got != 3000 {
				t.Errorf("redis holds %d keys, want 3000", got)
			}
			for _, f := range behind {
				if !logContains(t, f, "received snapshot") {
					t.Errorf("%s caught up without receiving a snapshot", f)
				}
			}
		})
	}
}

// TestJoinCompactedCluster: a new node joining a cluster whose log no longer
// starts at 1 gets a snapshot and then the log tail.
func TestJoinCompactedCluster(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{ExtraArgs: snapArgs})
	leader, _ := c.Leader(ctx)
	sample, err := writeKeysIn(leader.Addr, "join", 2000, 97, 5)
	if err != nil {
		t.Fatal(err)
	}
	n := c.AddNode(ctx, leader)
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitForReads(ctx, n, sample); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(c.AssertRedisIdentical(ctx)); got != 2000 {
		t.Errorf("redis holds %d keys, want 2000", got)
	}
	if !logContains(t, n, "loaded snapshot into redis") {
		t.Errorf("%s joined without loading a snapshot", n)
	}
}

// TestRestartFromSnapshot: the whole cluster restarts after compactions; each
// node loads its newest snapshot and replays the tail.
func TestRestartFromSnapshot(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{ExtraArgs: snapArgs})
	leader, _ := c.Leader(ctx)
	sample, err := writeKeysIn(leader.Addr, "restart", 2000, 97, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if err := n.StopProxy(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		if err := n.StartProxy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if err := waitForReads(ctx, n, sample); err != nil {
			t.Fatal(err)
		}
		if !logContains(t, n, "restarting from snapshot") {
			t.Errorf("%s did not restart from a snapshot", n)
		}
	}
	if got := len(c.AssertRedisIdentical(ctx)); got != 2000 {
		t.Errorf("redis holds %d keys, want 2000", got)
	}
}

// TestCorruptSnapshotAtStart: a node whose newest snapshot file is corrupt
// detects it at start, falls back to an older one, and converges.
func TestCorruptSnapshotAtStart(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{ExtraArgs: snapArgs})
	leader, followers := c.Leader(ctx)
	f := followers[0]
	sample, err := writeKeysIn(leader.Addr, "corrupt", 2000, 97, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.KillProxy(); err != nil {
		t.Fatal(err)
	}
	rdbs, _ := filepath.Glob(filepath.Join(f.DataDir, "snap", "*.rdb"))
	if len(rdbs) < 2 {
		t.Fatalf("%s keeps %d snapshots, want 2 to fall back on", f, len(rdbs))
	}
	newest := rdbs[len(rdbs)-1] // names sort by term then index
	b, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(newest, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c.RestartAndRead(ctx, f, sample)
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	c.AssertRedisIdentical(ctx)
	if !logContains(t, f, "snapshot is corrupt; trying an older one") {
		t.Errorf("%s did not report the corrupt snapshot", f)
	}
}

// TestKillDuringSnapshots: proxies are SIGKILLed at random moments while
// snapshots are made every few entries, and while a restarted follower is
// receiving and loading one. Every node restarts, converges, and no
// acknowledged write is lost.
func TestKillDuringSnapshots(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{ExtraArgs: []string{"--snapshot-entries", "20", "--snapshot-catchup-entries", "5"}})
	load := startWriteLoad(ctx, c.Nodes, 2, "snapkill")
	defer func() {
		select {
		case <-load.stop:
		default:
			load.Stop()
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	t.Logf("kill schedule seed time %v", time.Now())
	for round := 0; round < 6; round++ {
		_, followers := c.Leader(ctx)
		victim := followers[rng.IntN(len(followers))]
		if round%2 == 1 {
			// Down long enough for the others to compact past it, then
			// killed again while it receives or loads the snapshot.
			if err := victim.KillProxy(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(1500 * time.Millisecond)
			if err := victim.StartProxy(ctx); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		if err := victim.KillProxy(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if err := victim.StartProxy(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitStable(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	load.Stop()
	t.Logf("load: %s", load.Summary())
	assertAcked(t, c.AssertRedisIdentical(ctx), load.AckedCopy())
	received := 0
	for _, n := range c.Nodes {
		if logContains(t, n, "loaded snapshot into redis") {
			received++
		}
	}
	if received == 0 {
		t.Errorf("no node loaded a snapshot from the leader: the receive path was not exercised")
	}
}

// TestJoinAnswersOnceServing: RAFT.CLUSTER JOIN answers OK only once the
// new node serves: the snapshot the leader sends it is loaded into its
// redis. It answered as soon as the node saw itself a member, and a read
// right after the OK could get LOADING while the snapshot loaded (found by
// TestAuth under CI load).
func TestJoinAnswersOnceServing(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Nodes: 1, ExtraArgs: snapArgs})
	leader, _ := c.Leader(ctx)
	// Enough data that loading the snapshot takes a while (300k keys:
	// without the wait, 2 runs of 2 got LOADING).
	sample, err := writeKeysIn(leader.Addr, "serving", 300000, 9973, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := leader.Do(ctx, 30*time.Second, "RAFT.DEBUG", "COMPACT"); err != nil || v.String() != "+OK" {
		t.Fatalf("RAFT.DEBUG COMPACT: %s %v", v, err)
	}
	n := c.AddNode(ctx, leader)
	for k, want := range sample {
		if got, err := n.Client().Get(ctx, k).Result(); err != nil || got != want {
			t.Fatalf("GET %s through %s right after JOIN: %q %v, want %q", k, n, got, err, want)
		}
	}
	if !logContains(t, n, "loaded snapshot into redis") {
		t.Errorf("%s joined without loading a snapshot", n)
	}
}
