package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// backupInfo is what `raftproxy backup` prints and writes to FILE.rdb.json.
type backupInfo struct {
	Index     uint64 `json:"index"`
	Term      uint64 `json:"term"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	ClusterID string `json:"cluster_id"`
	From      string `json:"from"`
	Time      string `json:"time"`
}

// writeDataset writes keys of every type, some with expiries far ahead, in
// databases 0 and 1 of the server at addr (a proxy or a stock redis), each
// write acknowledged before the next.
func writeDataset(ctx context.Context, t *testing.T, addr, prefix string) {
	t.Helper()
	for db := 0; db < 2; db++ {
		cl := redis.NewClient(&redis.Options{Addr: addr, DB: db, Protocol: 2, DisableIdentity: true, MaxRetries: -1, PoolSize: 1})
		p := func(k string) string { return fmt.Sprintf("%s:%s:db%d", prefix, k, db) }
		cmds := [][]any{
			{"SET", p("str"), "hello"},
			{"SET", p("str-ex"), "expires", "EX", "7200"},
			{"SET", p("bin"), "\x00\xff\r\n"},
			{"HSET", p("hash"), "f1", "v1", "f2", "v2", "f3", "3"},
			{"PEXPIREAT", p("hash"), strconv.FormatInt(time.Now().Add(3*time.Hour).UnixMilli(), 10)},
			{"RPUSH", p("list"), "a", "b", "c", "a"},
			{"SADD", p("set"), "x", "y", "z"},
			{"EXPIRE", p("set"), "3600"},
			{"ZADD", p("zset"), "1", "one", "2.5", "two", "-3", "minus"},
			{"XADD", p("stream"), "1-1", "k", "v1"},
			{"XADD", p("stream"), "2-1", "k", "v2"},
			{"XGROUP", "CREATE", p("stream"), "grp", "0"},
			{"INCRBY", p("counter"), "41"},
		}
		for _, c := range cmds {
			if err := cl.Do(ctx, c...).Err(); err != nil {
				t.Fatalf("%v on %s db %d: %v", c, addr, db, err)
			}
		}
		cl.Close()
	}
}

// startRedisWithRDB starts a plain redis-server on a free port with dir and
// dbfilename as given (it loads that file if it exists) and stops it at
// cleanup; it returns its address.
func startRedisWithRDB(ctx context.Context, t *testing.T, dir, dbfilename string) string {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	p, err := startProcess("stock redis-server", filepath.Join(dir, "stock-redis.log"), "redis-server",
		"--port", strconv.Itoa(ports[0]), "--bind", "127.0.0.1", "--dir", dir, "--dbfilename", dbfilename,
		"--save", "", "--appendonly", "no", "--daemonize", "no")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	err = waitFor(ctx, 15*time.Second, 50*time.Millisecond, "stock redis-server loaded and answering PING", func(context.Context) error {
		if p.Exited() {
			return fmt.Errorf("redis-server exited: %v; log:\n%s", p.waitErr, logTail(p.logPath, 20))
		}
		return pingRaw(addr) // -LOADING until the RDB is in
	})
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func runBackup(ctx context.Context, t *testing.T, from, out string) backupInfo {
	t.Helper()
	info, stderr, err := tryBackup(ctx, nil, "--from", from, "--out", out)
	if err != nil {
		t.Fatalf("raftproxy backup --from %s: %v\nstderr: %s", from, err, stderr)
	}
	return info
}

// tryBackup runs raftproxy backup with args and env (added to the test's
// environment); it returns what it printed on stdout, decoded, and stderr.
func tryBackup(ctx context.Context, env []string, args ...string) (backupInfo, string, error) {
	cmd := exec.CommandContext(ctx, raftproxyBin, append([]string{"backup"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var info backupInfo
	if err := cmd.Run(); err != nil {
		return info, stderr.String(), err
	}
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil {
		return info, stderr.String(), fmt.Errorf("raftproxy backup printed %q: %w", stdout.String(), err)
	}
	return info, stderr.String(), nil
}

// TestBackupRestore: `raftproxy backup` from a follower of a 3-node cluster
// writes a plain RDB holding every write acknowledged before it started
// (checked in a stock redis-server), with its index and checksum in the
// sidecar; a new cluster seeded from it with --seed-rdb holds the same data
// on its first node and, through snapshot streaming, on a node that joins;
// a stock redis's dump.rdb seeds a cluster the same way; a file that is not
// an RDB is refused at start.
func TestBackupRestore(t *testing.T) {
	ctx := testContext(t, 120*time.Second)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	follower := followers[0]

	writeDataset(ctx, t, leader.Addr, "a")
	// An older snapshot on the follower that lacks the writes below: a
	// backup that reused it, or read the follower's state without a read
	// barrier, would miss them.
	if v, err := follower.Do(ctx, 10*time.Second, "RAFT.DEBUG", "COMPACT"); err != nil || v.Str != "OK" {
		t.Fatalf("RAFT.DEBUG COMPACT on %s: %v %v", follower, v, err)
	}
	writeDataset(ctx, t, leader.Addr, "b")
	if err := leader.Client().Set(ctx, "last-before-backup", "acknowledged", 0).Err(); err != nil {
		t.Fatal(err)
	}
	commitBefore := infoInt(ctx, t, leader, "commit_index")

	dir := t.TempDir()
	out := filepath.Join(dir, "backup.rdb")
	info := runBackup(ctx, t, follower.Addr, out)
	if info.Index < uint64(commitBefore) {
		t.Errorf("backup at index %d, but the leader had committed %d before it started", info.Index, commitBefore)
	}
	if info.ClusterID != c.ClusterID || info.Term == 0 || info.From != follower.Addr {
		t.Errorf("backup info %+v: want cluster %s, a term, from %s", info, c.ClusterID, follower.Addr)
	}
	rdb, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(rdb)
	if !bytes.HasPrefix(rdb, []byte("REDIS")) || int64(len(rdb)) != info.Size || hex.EncodeToString(sum[:]) != info.SHA256 {
		t.Errorf("%s: %d bytes, sha256 %x, header %q; backup info says %d bytes, sha256 %s", out, len(rdb), sum, rdb[:min(9, len(rdb))], info.Size, info.SHA256)
	}
	var sidecar backupInfo
	if b, err := os.ReadFile(out + ".json"); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &sidecar); err != nil || sidecar != info {
		t.Errorf("sidecar %s: %+v (%v), stdout said %+v", out+".json", sidecar, err, info)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}

	orig := c.AssertRedisIdentical(ctx)
	if orig[dumpKey(0, "last-before-backup")] == "" || orig[dumpKey(1, "b:zset:db1")] == "" {
		t.Fatalf("the original cluster lacks the dataset: %d keys", len(orig))
	}
	stock := startRedisWithRDB(ctx, t, dir, "backup.rdb")
	if d, err := dumpRedis(ctx, stock); err != nil {
		t.Fatal(err)
	} else if diff := diffDumps(orig, d); diff != "" {
		t.Errorf("a stock redis-server loading the backup differs from the cluster:\n%s", diff)
	}

	t.Run("SeedFromBackup", func(t *testing.T) {
		c2 := NewCluster(ctx, t, ClusterOptions{Nodes: 1, ExtraArgs: []string{"--seed-rdb", out}})
		if err := c2.Form(ctx); err != nil {
			t.Fatal(err)
		}
		if c2.ClusterID == c.ClusterID {
			t.Errorf("the seeded cluster reuses the backup's cluster id %s", c.ClusterID)
		}
		// The joining node has --seed-rdb too: JOIN ignores it, and the
		// node gets the seed by snapshot streaming.
		joined := c2.AddNode(ctx, c2.Nodes[0])
		if _, err := c2.WaitStable(ctx); err != nil {
			t.Fatal(err)
		}
		if d := c2.AssertRedisIdentical(ctx); diffDumps(orig, d) != "" {
			t.Errorf("the seeded cluster differs from the backed-up one:\n%s", diffDumps(orig, d))
		}
		if !logContains(t, joined, "received snapshot") {
			t.Errorf("%s did not receive the seed as a snapshot", joined)
		}
		// The seeded cluster takes writes, and the seed stays under them.
		if err := joined.Client().Incr(ctx, "a:counter:db0").Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := c2.Nodes[0].Client().Get(ctx, "a:counter:db0").Result(); err != nil || v != "42" {
			t.Errorf("INCR of a seeded counter read back %q, %v; want 42", v, err)
		}
		if v, err := c2.Nodes[0].Do(ctx, 5*time.Second, "RAFT.CLUSTER", "INIT"); err != nil || v.Kind != '-' || !strings.Contains(v.Str, "Already cluster member") {
			t.Errorf("a second INIT answered %v %v", v, err)
		}
		// The seeded node restarts from its seed snapshot and the log after it.
		after := c2.AssertRedisIdentical(ctx)
		first := c2.Nodes[0]
		if err := first.StopProxy(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := first.StartProxy(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c2.WaitStable(ctx); err != nil {
			t.Fatal(err)
		}
		if d := c2.AssertRedisIdentical(ctx); diffDumps(after, d) != "" {
			t.Errorf("after restarting the seeded node:\n%s", diffDumps(after, d))
		}
	})

	t.Run("SeedFromStockRedis", func(t *testing.T) {
		sdir := t.TempDir()
		src := startRedisWithRDB(ctx, t, sdir, "dump.rdb")
		writeDataset(ctx, t, src, "stock")
		want, err := dumpRedis(ctx, src)
		if err != nil {
			t.Fatal(err)
		}
		admin := newClient(src, 1)
		defer admin.Close()
		if err := admin.Save(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		c3 := NewCluster(ctx, t, ClusterOptions{Nodes: 1, ExtraArgs: []string{"--seed-rdb", filepath.Join(sdir, "dump.rdb")}})
		if err := c3.Form(ctx); err != nil {
			t.Fatal(err)
		}
		if d := c3.AssertRedisIdentical(ctx); diffDumps(want, d) != "" {
			t.Errorf("the cluster seeded from a stock redis differs from it:\n%s", diffDumps(want, d))
		}
		if v, err := c3.Nodes[0].Client().HGet(ctx, "stock:hash:db0", "f2").Result(); err != nil || v != "v2" {
			t.Errorf("HGET through the seeded cluster: %q, %v", v, err)
		}
	})

	t.Run("RefuseUnloadableSeed", func(t *testing.T) {
		// A whole RDB (header, EOF, checksum) in a format version no redis
		// has: it passes the check at start, and the local redis refuses it.
		future := filepath.Join(t.TempDir(), "future.rdb")
		if err := os.WriteFile(future, []byte("REDIS0099\xff\x00\x00\x00\x00\x00\x00\x00\x00"), 0o600); err != nil {
			t.Fatal(err)
		}
		c4 := NewCluster(ctx, t, ClusterOptions{Nodes: 1, ExtraArgs: []string{"--seed-rdb", future}})
		n := c4.Nodes[0]
		v, err := n.Do(ctx, 30*time.Second, "RAFT.CLUSTER", "INIT")
		if err != nil || v.Kind != '-' || !strings.Contains(v.Str, "cannot load it") {
			t.Fatalf("INIT seeded with an RDB redis cannot load answered %v %v", v, err)
		}
		t.Logf("INIT answered: %s", v.Str)
		if v, err := n.Do(ctx, 5*time.Second, "GET", "k"); err != nil || v.Kind != '-' || !strings.HasPrefix(v.Str, "NOCLUSTER") {
			t.Errorf("after a refused seed, GET answered %v %v; want -NOCLUSTER", v, err)
		}
		if _, err := os.Stat(filepath.Join(n.DataDir, "wal")); !os.IsNotExist(err) {
			t.Errorf("a refused seed left a wal: %v", err)
		}
		if err := pingRaw(n.RedisAddr); err != nil {
			t.Errorf("the local redis after a refused seed: %v", err)
		}
	})

	t.Run("RefuseBadSeed", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "not.rdb")
		if err := os.WriteFile(bad, []byte("*1\r\n$4\r\nPING\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		ports, err := freePorts(2)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, raftproxyBin, "--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]),
			"--peer-listen", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--data-dir", t.TempDir(), "--seed-rdb", bad)
		b, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(b), "does not start with REDIS") {
			t.Errorf("raftproxy with a seed that is no RDB: %v, output:\n%s", err, b)
		}
	})
}
