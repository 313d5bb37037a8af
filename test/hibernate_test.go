package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/raftproxy/raftproxy/proxy"
)

// redisChildren returns the state letter (/proc/<pid>/stat) of each
// redis-server the process pid started, by pid.
func redisChildren(pid int) map[int]byte {
	out := map[int]byte{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		open, shut := bytes.IndexByte(b, '('), bytes.LastIndex(b, []byte(") "))
		if open < 0 || shut < open {
			continue
		}
		rest := bytes.Fields(b[shut+2:]) // state, ppid, ...
		if string(b[open+1:shut]) != "redis-server" || len(rest) < 2 || string(rest[1]) != strconv.Itoa(pid) {
			continue
		}
		child, _ := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
		out[child] = rest[0][0]
	}
	return out
}

// TestIdleRedisStopped: the redis-servers of an idle sharded cluster are
// stopped (--redis-idle-stop: raftproxy_redis_stopped, and the kernel
// shows them in state T), and a cluster client's commands through any
// node, to every shard, are answered all the same: writes, reads through
// followers (READONLY), a blocking pop that outlasts the idle time, and
// MULTI; with keys due in an hour and a memory limit too; and keys due
// in 2 s are deleted when due. A node killed with its redis-servers stopped comes back with
// everything.
func TestIdleRedisStopped(t *testing.T) {
	const shards = 2
	ctx := testContext(t, 4*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Shards: shards, Supervised: true, Metrics: true,
		ExtraArgs: []string{"--redis-idle-stop", "1s"}})
	cc := newClusterClient(c.Nodes[1].Addr)
	defer cc.Close()
	o := newClusterClient(c.Nodes[2].Addr).Options()
	o.ReadOnly = true
	ro := redis.NewClusterClient(o)
	defer ro.Close()

	const nkeys = 40 // over both shards
	write := func(round int) {
		t.Helper()
		for i := range nkeys {
			if err := cc.Set(ctx, fmt.Sprintf("key:%d", i), fmt.Sprintf("%d-%d", round, i), 0).Err(); err != nil {
				t.Fatalf("SET key:%d: %v", i, err)
			}
		}
	}
	check := func(cl *redis.ClusterClient, round int, how string) {
		t.Helper()
		for i := range nkeys {
			want := fmt.Sprintf("%d-%d", round, i)
			if got, err := cl.Get(ctx, fmt.Sprintf("key:%d", i)).Result(); err != nil || got != want {
				t.Fatalf("%s: GET key:%d = %q, %v; want %q", how, i, got, err, want)
			}
		}
	}
	allStopped := func(what string) {
		t.Helper()
		err := waitFor(ctx, 60*time.Second, 200*time.Millisecond, what, func(ctx context.Context) error {
			for _, n := range c.Running() {
				if v := scrapeNode(ctx, t, n).get(t, "raftproxy_redis_stopped"); v != shards {
					return fmt.Errorf("%s: raftproxy_redis_stopped %v, want %d", n, v, shards)
				}
				kids := redisChildren(n.proxy.Pid())
				if len(kids) != shards {
					return fmt.Errorf("%s runs %d redis-servers, want %d", n, len(kids), shards)
				}
				for pid, st := range kids {
					if st != 'T' {
						return fmt.Errorf("%s: redis-server %d in state %c", n, pid, st)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	write(1)
	allStopped("every redis-server stopped after the writes")
	check(ro, 1, "stopped, through a follower (READONLY)")
	allStopped("every redis-server stopped after the reads")
	write(2)
	check(cc, 2, "after writes to stopped redis-servers")

	// A blocking pop waits three times the idle time for a push.
	allStopped("every redis-server stopped before BLPOP")
	res := make(chan error, 1)
	go func() {
		v, err := cc.BLPop(ctx, 10*time.Second, "{q}list").Result()
		if err == nil && (len(v) != 2 || v[1] != "pushed") {
			err = fmt.Errorf("BLPOP got %q", v)
		}
		res <- err
	}()
	time.Sleep(3 * time.Second)
	if err := cc.RPush(ctx, "{q}list", "pushed").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("BLPOP: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("BLPOP unanswered 10 s after the push")
	}

	allStopped("every redis-server stopped before MULTI")
	cmds, err := cc.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, "{t}n")
		p.Incr(ctx, "{t}n")
		return nil
	})
	if err != nil || cmds[1].(*redis.IntCmd).Val() != 2 {
		t.Fatalf("MULTI INCR INCR: %v %v", cmds, err)
	}

	// Keys with deadlines: far ones leave every redis-server to be stopped
	// (a leader's active expiry rests until the soonest deadline it saw),
	// and near ones are deleted when due, by active expiry alone (nothing
	// reads them; DBSIZE counts a key until it is deleted).
	for i := range 20 {
		if err := cc.Set(ctx, fmt.Sprintf("far:%d", i), "x", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	allStopped("every redis-server stopped with keys due in an hour")
	// A memory limit (CONFIG SET through the log, on every shard) leaves
	// them to be stopped too: under its limit, a leader looks again only
	// once something is applied.
	for k := range shards {
		if v, err := (&Node{c: c, Addr: proxy.ShardAddr(c.Nodes[0].Addr, k)}).Do(ctx, 5*time.Second, "CONFIG", "SET", "maxmemory", "100mb"); err != nil || v.Str != "OK" {
			t.Fatalf("CONFIG SET maxmemory on shard %d: %v %v", k, v, err)
		}
	}
	allStopped("every redis-server stopped under a memory limit")
	dbsize := func() int64 {
		t.Helper()
		var total int64
		for k := range shards {
			v, err := (&Node{c: c, Addr: proxy.ShardAddr(c.Nodes[0].Addr, k)}).Do(ctx, 5*time.Second, "DBSIZE")
			if err != nil {
				t.Fatalf("DBSIZE of shard %d: %v", k, err)
			}
			total += v.Int
		}
		return total
	}
	base := dbsize()
	for i := range 20 {
		if err := cc.Set(ctx, fmt.Sprintf("near:%d", i), "x", 2*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if n := dbsize(); n != base+20 {
		t.Fatalf("DBSIZE %d after 20 more keys, want %d", n, base+20)
	}
	err = waitFor(ctx, 30*time.Second, 500*time.Millisecond, "the near keys deleted by active expiry", func(ctx context.Context) error {
		if n := dbsize(); n != base {
			return fmt.Errorf("DBSIZE %d, want %d", n, base)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	allStopped("every redis-server stopped after the near keys' deletion")

	// Killed with its redis-servers stopped (they die with it), a node
	// restarts and rebuilds them from its log.
	allStopped("every redis-server stopped before the kill")
	n := c.Nodes[2]
	if err := n.KillProxy(); err != nil {
		t.Fatal(err)
	}
	if err := n.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	err = waitFor(ctx, 60*time.Second, 200*time.Millisecond, "the restarted node serves", func(ctx context.Context) error {
		for i := range nkeys {
			got, err := ro.Get(ctx, fmt.Sprintf("key:%d", i)).Result()
			if err != nil {
				return err
			}
			if want := fmt.Sprintf("2-%d", i); got != want {
				return fmt.Errorf("key:%d = %q, want %q", i, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	allStopped("every redis-server stopped after the restart")
	c.AssertShardsIdentical(ctx)
}
