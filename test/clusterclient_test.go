package test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

func newClusterClient(addrs ...string) *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:           addrs,
		Protocol:        2,
		DisableIdentity: true,
		DialTimeout:     2 * time.Second,
		ReadTimeout:     15 * time.Second,
		WriteTimeout:    5 * time.Second,
		MaxRedirects:    8,
		// A dead master answers nothing, not even -MOVED: go-redis finds the
		// new one when it reloads the slot map (every 60 s by default), as
		// it would after a Redis Cluster failover.
		ClusterStateReloadInterval: time.Second,
		MaintNotificationsConfig:   &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// TestClusterClient: cluster clients work unchanged. go-redis's ClusterClient
// pointed at one follower finds the leader as the master of all slots, does
// SET/GET and MSET/MGET with hash tags, and keeps working when leadership
// moves and followers redirect (follower-proxy off); redis-cli -c follows
// the redirect of a follower.
func TestClusterClient(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	f := followers[0]

	cc := newClusterClient(f.Addr)
	defer cc.Close()
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER SLOTS: %v", err)
	}
	if len(slots) != 1 || slots[0].Start != 0 || slots[0].End != 16383 || len(slots[0].Nodes) != 3 || slots[0].Nodes[0].Addr != leader.Addr {
		t.Fatalf("CLUSTER SLOTS = %+v, want 0-16383 with the leader %s first and 3 nodes", slots, leader.Addr)
	}
	myid, err := f.Client().Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil || len(myid) != 40 {
		t.Errorf("CLUSTER MYID = %q, %v", myid, err)
	}
	nodes, err := f.Client().ClusterNodes(ctx).Result()
	if err != nil || !strings.Contains(nodes, myid+" "+f.Addr+"@") || !strings.Contains(nodes, "myself,slave") ||
		strings.Count(nodes, "\n") != 3 || !strings.Contains(nodes, " master - ") {
		t.Errorf("CLUSTER NODES on a follower:\n%s%v", nodes, err)
	}
	if info, err := f.Client().ClusterInfo(ctx).Result(); err != nil || !strings.Contains(info, "cluster_state:ok\r\n") || !strings.Contains(info, "cluster_known_nodes:3\r\n") {
		t.Errorf("CLUSTER INFO: %q %v", info, err)
	}
	if n, err := f.Client().ClusterKeySlot(ctx, "{user1}:a").Result(); err != nil || n != 8106 {
		t.Errorf("CLUSTER KEYSLOT {user1}:a = %d, %v; want 8106", n, err)
	}
	if info, err := f.Client().Info(ctx, "cluster").Result(); err != nil || !strings.Contains(info, "cluster_enabled:1") {
		t.Errorf("INFO cluster: %q %v", info, err)
	}

	use := func(round string) {
		t.Helper()
		k := "cc:" + round
		if err := cc.Set(ctx, k, round, 0).Err(); err != nil {
			t.Fatalf("%s: SET: %v", round, err)
		}
		if v, err := cc.Get(ctx, k).Result(); err != nil || v != round {
			t.Fatalf("%s: GET = %q, %v", round, v, err)
		}
		if err := cc.MSet(ctx, "{cc}:a", round+"a", "{cc}:b", round+"b").Err(); err != nil {
			t.Fatalf("%s: MSET with a hash tag: %v", round, err)
		}
		if vs, err := cc.MGet(ctx, "{cc}:a", "{cc}:b").Result(); err != nil || fmt.Sprint(vs) != fmt.Sprintf("[%sa %sb]", round, round) {
			t.Fatalf("%s: MGET = %v, %v", round, vs, err)
		}
	}
	use("first")

	// Followers now redirect, so the client must find the new leader.
	for _, n := range c.Nodes {
		if v, err := n.Do(ctx, 5*time.Second, "RAFT.CONFIG", "SET", "follower-proxy", "no"); err != nil || v.Kind != '+' {
			t.Fatalf("%s: RAFT.CONFIG SET follower-proxy no: %v %v", n, v, err)
		}
	}
	v, err := f.Do(ctx, 5*time.Second, "SET", "foo", "x")
	if want := "MOVED 12182 " + leader.Addr; err != nil || v.Kind != '-' || v.Str != want {
		t.Errorf("SET foo on a follower: %v %v, want -%s", v, err, want)
	}
	// READONLY lets a connection read on a follower all the same.
	rc, err := dialRaw(f.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	for _, step := range []struct{ args, want []string }{
		{[]string{"GET", "cc:first"}, []string{"-MOVED"}},
		{[]string{"READONLY"}, []string{"+OK"}},
		{[]string{"GET", "cc:first"}, []string{`"first"`}},
		{[]string{"SET", "cc:first", "y"}, []string{"-MOVED"}},
		{[]string{"READWRITE"}, []string{"+OK"}},
		{[]string{"ASKING"}, []string{"+OK"}},
		{[]string{"GET", "cc:first"}, []string{"-MOVED"}},
	} {
		v, err := rc.Do(step.args...)
		if err != nil || !strings.HasPrefix(v.String(), step.want[0]) {
			t.Errorf("%q on a follower with follower-proxy off: %v %v, want %s...", step.args, v, err, step.want[0])
		}
	}

	if v, err := leader.Do(ctx, 10*time.Second, "RAFT.TRANSFER_LEADER", infoOf(ctx, t, f, "node_id")); err != nil || v.Kind != '+' {
		t.Fatalf("RAFT.TRANSFER_LEADER to %s: %v %v", f, v, err)
	}
	newLeader, _ := c.Leader(ctx)
	if newLeader != f {
		t.Fatalf("leader is %s after transfer to %s", newLeader, f)
	}
	use("after-transfer")

	// Killing the leader: the client reaches the survivors and is redirected
	// to whichever leads next.
	if err := f.KillProxy(); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 30*time.Second, 200*time.Millisecond, "cluster client writes after the leader died", func(ctx context.Context) error {
		return cc.Set(ctx, "cc:after-kill", "1", 0).Err()
	}); err != nil {
		t.Fatal(err)
	}
	use("after-kill")

	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Log("redis-cli not installed; skipping redis-cli -c")
		return
	}
	l, rest := c.Leader(ctx)
	follower := rest[0]
	host, port := strings.Split(follower.Addr, ":")[0], strings.Split(follower.Addr, ":")[1]
	out, err := exec.CommandContext(ctx, "redis-cli", "-c", "-h", host, "-p", port, "SET", "cc:cli", "via-cli").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "OK" {
		t.Errorf("redis-cli -c -p %s SET (leader %s): %q %v", port, l, out, err)
	}
	if v, err := l.Client().Get(ctx, "cc:cli").Result(); err != nil || v != "via-cli" {
		t.Errorf("GET cc:cli after redis-cli -c: %q %v", v, err)
	}
}

// infoOf returns one RAFT.INFO field of n.
func infoOf(ctx context.Context, t *testing.T, n *Node, key string) string {
	t.Helper()
	info, err := n.RaftInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.Get(key)
}

// TestClusterInfoAndWait: INFO's Raft section agrees with RAFT.INFO, the
// fields that describe raftproxy are rewritten, and WAIT/WAITAOF count the
// other members that hold the connection's writes.
func TestClusterInfoAndWait(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	for _, n := range append([]*Node{leader}, followers...) {
		cl := n.Client()
		raftSec, err := cl.Info(ctx, "raft").Result()
		if err != nil {
			t.Fatalf("%s: INFO raft: %v", n, err)
		}
		ri, err := n.RaftInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(raftSec, "\r\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = v
			}
		}
		if !strings.HasPrefix(raftSec, "# Raft\r\n") {
			t.Errorf("%s: INFO raft does not start with # Raft: %q", n, raftSec)
		}
		for k, rk := range map[string]string{"raft_node_id": "node_id", "raft_dbid": "cluster_id", "raft_role": "role",
			"raft_leader_id": "leader_id", "raft_state": "state", "raft_num_nodes": "num_nodes", "raft_num_voting_nodes": "num_voting_nodes",
			"raft_current_term": "current_term", "raft_quarantined": "quarantined"} {
			if fields[k] != ri.Get(rk) {
				t.Errorf("%s: INFO raft %s=%q, RAFT.INFO %s=%q", n, k, fields[k], rk, ri.Get(rk))
			}
		}
		for _, k := range []string{"raft_is_voting", "raft_node0", "raft_node2", "raft_commit_index", "raft_last_applied_index", "raft_current_index", "raft_log_entries", "raft_snapshot_last_idx"} {
			if _, ok := fields[k]; !ok {
				t.Errorf("%s: INFO raft has no %s: %q", n, k, raftSec)
			}
		}
		def, err := cl.Info(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(def, "# Raft") {
			t.Errorf("%s: INFO (default) has the Raft section; like a module's it is in INFO everything and INFO raft only", n)
		}
		role := "role:slave\r\nmaster_host:"
		if n == leader {
			role = "role:master\r\nconnected_slaves:2\r\n"
		}
		_, port, _ := strings.Cut(n.Addr, ":")
		for _, want := range []string{"redis_mode:cluster\r\n", "tcp_port:" + port + "\r\n", "cluster_enabled:1\r\n", role, "# Keyspace"} {
			if !strings.Contains(def, want) {
				t.Errorf("%s: INFO lacks %q:\n%s", n, want, def)
			}
		}
		// ROLE describes the raft cluster, never the local redis's own
		// replication (it is a replica of its proxy while held).
		rv, err := cl.Do(ctx, "ROLE").Slice()
		switch {
		case err != nil:
			t.Errorf("%s: ROLE: %v", n, err)
		case n == leader:
			if peers, _ := rv[2].([]any); len(rv) != 3 || rv[0] != "master" || len(peers) != 2 {
				t.Errorf("%s: ROLE on the leader = %v, want master with 2 replicas", n, rv)
			}
		default:
			_, lport, _ := strings.Cut(leader.Addr, ":")
			if len(rv) != 5 || rv[0] != "slave" || fmt.Sprint(rv[2]) != lport || rv[3] != "connected" {
				t.Errorf("%s: ROLE on a follower = %v, want slave of port %s, connected", n, rv, lport)
			}
		}
		every, err := cl.Info(ctx, "everything").Result()
		if err != nil || !strings.Contains(every, "\r\n\r\n# Raft\r\nraft_dbid:") || !strings.Contains(every, "# Commandstats") {
			t.Errorf("%s: INFO everything lacks the Raft section or redis's: %v", n, err)
		}
		if s, err := cl.Info(ctx, "server", "raft").Result(); err != nil || !strings.Contains(s, "# Server") || !strings.Contains(s, "# Raft") {
			t.Errorf("%s: INFO server raft: %q %v", n, s, err)
		}
	}

	// WAIT after a write: on the leader both followers acknowledge it soon;
	// a follower answers what the commit guarantees (a majority minus itself).
	for _, n := range []*Node{leader, followers[0]} {
		conn, err := dialRaw(n.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		want := int64(2)
		if n != leader {
			want = 1
		}
		for _, step := range [][]string{{"SET", "wait:k", "v"}, {"WAIT", "2", "2000"}, {"WAITAOF", "1", "2", "2000"}, {"WAIT", "1", "0"}} {
			v, err := conn.Do(step...)
			switch {
			case err != nil:
				t.Fatalf("%s: %q: %v", n, step, err)
			case step[0] == "WAIT" && (v.Kind != ':' || v.Int < min(want, mustAtoi(step[1]))):
				t.Errorf("%s: %q = %v, want at least %d", n, step, v, min(want, mustAtoi(step[1])))
			case step[0] == "WAITAOF" && (v.Kind != '*' || len(v.Arr) != 2 || v.Arr[0].Int != 1 || v.Arr[1].Int != want):
				t.Errorf("%s: %q = %v, want [1 %d]", n, step, v, want)
			}
		}
		if v, _ := conn.Do("WAIT", "1", "-1"); v.String() != "-ERR timeout is negative" {
			t.Errorf("%s: WAIT 1 -1 = %v", n, v)
		}
		conn.Close()
	}
	// A follower never blocks: it cannot see the others' progress.
	start := time.Now()
	if v, err := followers[0].Do(ctx, 5*time.Second, "WAIT", "5", "0"); err != nil || v.Kind != ':' || v.Int != 1 {
		t.Errorf("WAIT 5 0 on a follower: %v %v, want :1 at once", v, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("WAIT on a follower took %v", d)
	}

	// DEBUG: observing subcommands reach redis (whose enable-debug-command
	// decides), the others are refused with a reason.
	if v, _ := leader.Do(ctx, 5*time.Second, "DEBUG", "RELOAD"); !strings.Contains(v.Str, "'DEBUG RELOAD' would change or stop") {
		t.Errorf("DEBUG RELOAD: %v", v)
	}
	if v, _ := leader.Do(ctx, 5*time.Second, "DEBUG", "SLEEP", "1"); !strings.Contains(v.Str, "'DEBUG SLEEP' would change or stop") {
		t.Errorf("DEBUG SLEEP 1: %v", v)
	}
	stock := startStockRedis(ctx, t)
	for _, cmd := range [][]string{{"DEBUG", "SLEEP", "0"}, {"DEBUG", "OBJECT", "nokey"}} {
		want := runScript(t, stock, "x", [][]string{cmd})
		got := runScript(t, leader.Addr, "x", [][]string{cmd})
		if got[0] != want[0] {
			t.Errorf("%q: raftproxy %s, redis %s", cmd, got[0], want[0])
		}
	}
	if v, _ := leader.Do(ctx, 5*time.Second, "CLUSTER", "ADDSLOTS", "1"); !strings.Contains(v.Str, "one shard owns every slot") {
		t.Errorf("CLUSTER ADDSLOTS: %v", v)
	}
}

func mustAtoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// TestConfigSetReplicated: CONFIG SET goes through the log to every node's
// redis, all or nothing, and the values survive a snapshot followed by a
// restart of a node with a fresh redis, and a redis that dies and is rebuilt
// from the snapshot.
func TestConfigSetReplicated(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, followers := c.Leader(ctx)
	f := followers[0]
	cl := f.Client()
	if err := cl.ConfigSet(ctx, "hash-max-listpack-entries", "7").Err(); err != nil {
		t.Fatalf("CONFIG SET hash-max-listpack-entries 7: %v", err)
	}
	if err := cl.Do(ctx, "CONFIG", "SET", "slowlog-max-len", "33", "zset-max-ziplist-entries", "9").Err(); err != nil {
		t.Fatalf("CONFIG SET of two parameters: %v", err)
	}
	for _, bad := range []struct{ args []any }{
		{[]any{"CONFIG", "SET", "dir", "/tmp"}},
		{[]any{"CONFIG", "SET", "slowlog-max-len", "1", "maxmemory-clients", "1mb"}},
		{[]any{"CONFIG", "SET", "no-such-parameter", "1"}},
	} {
		err := cl.Do(ctx, bad.args...).Err()
		if err == nil || !strings.Contains(err.Error(), fmt.Sprint(bad.args[len(bad.args)-2])) {
			t.Errorf("%v: %v, want an error naming the parameter", bad.args, err)
		}
	}
	// Refused by redis itself: fails identically on every node.
	if err := cl.ConfigSet(ctx, "hash-max-listpack-entries", "lots").Err(); err == nil {
		t.Error("CONFIG SET hash-max-listpack-entries lots: accepted")
	}
	want := map[string]string{"hash-max-listpack-entries": "7", "slowlog-max-len": "33", "zset-max-listpack-entries": "9"}
	check := func(when string) {
		t.Helper()
		for _, n := range c.Running() {
			for p, v := range want {
				if err := waitFor(ctx, 20*time.Second, 100*time.Millisecond, fmt.Sprintf("%s: %s: CONFIG GET %s", when, n, p), func(ctx context.Context) error {
					got, err := n.RedisClient().ConfigGet(ctx, p).Result()
					if err != nil {
						return err
					}
					if got[p] != v {
						return fmt.Errorf("redis has %s=%q, want %q", p, got[p], v)
					}
					viaProxy, err := n.Client().ConfigGet(ctx, p).Result()
					if err != nil {
						return err
					}
					if viaProxy[p] != v {
						return fmt.Errorf("CONFIG GET through the proxy: %s=%q, want %q", p, viaProxy[p], v)
					}
					return nil
				}); err != nil {
					t.Error(err)
				}
			}
		}
	}
	check("after CONFIG SET")

	for _, n := range c.Running() {
		if v, err := n.Do(ctx, time.Minute, "RAFT.DEBUG", "COMPACT"); err != nil || v.Kind != '+' {
			t.Fatalf("%s: RAFT.DEBUG COMPACT: %v %v", n, v, err)
		}
	}
	// Set after the snapshot: restored nodes get it from the log after it.
	if err := leader.Client().ConfigSet(ctx, "slowlog-max-len", "44").Err(); err != nil {
		t.Fatal(err)
	}
	want["slowlog-max-len"] = "44"

	// A node restarted with a fresh redis loads the snapshot, then the log.
	if err := f.StopProxy(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := f.KillRedis(); err != nil {
		t.Fatal(err)
	}
	if err := f.StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	check("after restarting a node with a fresh redis")

	// A redis that dies under a running proxy is rebuilt from the snapshot.
	other := followers[1]
	if err := other.KillRedis(); err != nil {
		t.Fatal(err)
	}
	if err := other.StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, 30*time.Second, 200*time.Millisecond, "rebuilt redis serving", func(ctx context.Context) error {
		_, err := other.Client().Get(ctx, "nokey").Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		return fmt.Errorf("GET: %v", err)
	}); err != nil {
		t.Fatal(err)
	}
	check("after a redis restart")
	c.AssertRedisIdentical(ctx)
}

// redisCommandScript runs through raftproxy and a stock redis-server with
// the same replies (TIME's aside, checked apart).
var redisCommandScript = [][]string{
	{"FLUSHALL", "SYNC"}, {"DBSIZE"},
	{"SET", "k1", "v1"}, {"RPUSH", "l", "a", "b"}, {"HSET", "h", "f", "1"}, {"SADD", "s", "x"}, {"ZADD", "z", "1", "m"},
	{"DBSIZE"}, {"TYPE", "k1"}, {"TYPE", "l"}, {"TYPE", "h"}, {"TYPE", "s"}, {"TYPE", "z"}, {"TYPE", "nokey"},
	{"OBJECT", "ENCODING", "k1"}, {"OBJECT", "ENCODING", "l"}, {"OBJECT", "ENCODING", "h"}, {"OBJECT", "REFCOUNT", "k1"},
	{"OBJECT", "FREQ", "k1"}, {"OBJECT", "ENCODING", "nokey"},
	{"MEMORY", "USAGE", "k1"}, {"MEMORY", "USAGE", "nokey"},
	{"SCAN", "0", "MATCH", "k*"}, {"SSCAN", "s", "0"}, {"HSCAN", "h", "0"}, {"ZSCAN", "z", "0"},
	{"SWAPDB", "0", "1"}, {"DBSIZE"}, {"SELECT", "1"}, {"DBSIZE"}, {"GET", "k1"},
	{"MOVE", "k1", "2"}, {"MOVE", "k1", "2"}, {"SELECT", "2"}, {"GET", "k1"},
	{"COPY", "k1", "k3", "DB", "3"}, {"COPY", "k1", "k3", "DB", "3"}, {"COPY", "k1", "k3", "DB", "3", "REPLACE"},
	{"SELECT", "3"}, {"GET", "k3"}, {"FLUSHDB"}, {"DBSIZE"},
	{"SELECT", "1"}, {"DBSIZE"}, {"FLUSHDB", "SYNC"}, {"DBSIZE"},
	{"SELECT", "0"}, {"SET", "k9", "v"}, {"FLUSHALL"}, {"DBSIZE"}, {"SELECT", "2"}, {"DBSIZE"},
}

// TestClusterRedisCommands: keyspace and database commands behave as on a
// stock redis-server, and DUMP/RESTORE round-trips a value.
func TestClusterRedisCommands(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	_, followers := c.Leader(ctx)
	stock := startStockRedis(ctx, t)
	want := runScript(t, stock, "x", redisCommandScript)
	got := runScript(t, followers[0].Addr, "x", redisCommandScript)
	for i := range redisCommandScript {
		if got[i] != want[i] {
			t.Errorf("%q: raftproxy answered %s, redis answered %s", redisCommandScript[i], got[i], want[i])
		}
	}
	v, err := followers[0].Do(ctx, 5*time.Second, "TIME")
	if err != nil || v.Kind != '*' || len(v.Arr) != 2 {
		t.Errorf("TIME: %v %v", v, err)
	}

	cl := followers[0].Client()
	if err := cl.RPush(ctx, "dump:src", "a", "b", "c").Err(); err != nil {
		t.Fatal(err)
	}
	dump, err := cl.Dump(ctx, "dump:src").Result()
	if err != nil {
		t.Fatalf("DUMP: %v", err)
	}
	if err := cl.Restore(ctx, "dump:dst", 100*time.Second, dump).Err(); err != nil {
		t.Fatalf("RESTORE: %v", err)
	}
	if vs, err := cl.LRange(ctx, "dump:dst", 0, -1).Result(); err != nil || fmt.Sprint(vs) != "[a b c]" {
		t.Errorf("LRANGE of the restored list: %v %v", vs, err)
	}
	if ttl, err := cl.PTTL(ctx, "dump:dst").Result(); err != nil || ttl <= 90*time.Second || ttl > 100*time.Second {
		t.Errorf("PTTL of the restored key: %v %v", ttl, err)
	}
	if err := cl.Restore(ctx, "dump:dst", 0, dump).Err(); err == nil || !strings.Contains(err.Error(), "BUSYKEY") {
		t.Errorf("RESTORE onto an existing key: %v, want BUSYKEY", err)
	}
	c.AssertRedisIdentical(ctx)
}
