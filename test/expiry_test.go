package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestExpiryAppliedLate: a node that applies entries after the keys they
// touch have expired by the clock (it was down, and replays its log or
// receives the entries from the leader on restart) must end with the data
// of the nodes that applied them live. A rate limiter's INCR on a key with a
// deadline, applied late, must not make a new key without one.
func TestExpiryAppliedLate(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{Metrics: true})
	leader, followers := c.Leader(ctx)
	if leader == nil || len(followers) < 2 {
		t.Fatal("no stable leader")
	}
	const keys = 20
	const ttl = 1500 * time.Millisecond
	write := func(prefix string) {
		t.Helper()
		for i := range keys {
			k := fmt.Sprintf("%s:%d", prefix, i)
			for _, args := range [][]string{
				{"SET", k + ":limit", "5", "PX", fmt.Sprint(ttl.Milliseconds())},
				{"INCR", k + ":limit"},
				{"SET", k + ":s", "v", "PX", fmt.Sprint(ttl.Milliseconds())},
				{"APPEND", k + ":s", "w"},
				{"HSET", k + ":h", "f", "v"},
				{"PEXPIRE", k + ":h", fmt.Sprint(ttl.Milliseconds())},
				{"HINCRBY", k + ":h", "n", "1"},
			} {
				if v, err := leader.Do(ctx, 10*time.Second, args...); err != nil || v.IsError() {
					t.Fatalf("%q: %v %v", args, v, err)
				}
			}
		}
	}
	// A key that had expired when the next write was proposed: every node
	// makes a new key then, live or late.
	for _, args := range [][]string{{"SET", "gone", "5", "PX", "100"}} {
		if v, err := leader.Do(ctx, 10*time.Second, args...); err != nil || v.IsError() {
			t.Fatalf("%q: %v %v", args, v, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if v, err := leader.Do(ctx, 10*time.Second, "INCR", "gone"); err != nil || v.String() != ":1" {
		t.Fatalf("INCR gone: %v %v, want 1", v, err)
	}

	// One follower applies the writes live, then stops: it replays them
	// from its own log after their keys expired.
	replays := followers[0]
	write("replayed")
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	if err := replays.KillProxy(); err != nil {
		t.Fatal(err)
	}
	// The other is down while they are written: it gets them from the
	// leader after their keys expired.
	fetches := followers[1]
	if err := fetches.KillProxy(); err != nil {
		t.Fatal(err)
	}
	// With two of three down nothing commits: bring the first back before
	// writing, now that its entries' keys are still alive.
	if err := replays.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	leader, _ = c.Leader(ctx)
	write("fetched")
	time.Sleep(ttl + 500*time.Millisecond)
	if err := replays.KillProxy(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{replays, fetches} {
		if err := n.StartProxy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	// What expired is deleted by the leader's active expiry, through the
	// log, on every node alike.
	var dump redisDump
	err := waitFor(ctx, 10*time.Second, 200*time.Millisecond, "expired keys deleted", func(ctx context.Context) error {
		dump = c.AssertRedisIdentical(ctx)
		for k, v := range dump {
			if strings.Contains(k, ":limit") || strings.Contains(k, ":s") || strings.Contains(k, ":h") {
				return fmt.Errorf("%s is still there after its deadline: %s", k, v)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if _, ok := dump[dumpKey(0, "gone")]; !ok {
		t.Error("gone (made anew after its first deadline, with none) is missing")
	}
	// Every node's redis is a master: none is held as a replica.
	for _, n := range c.Nodes {
		info, err := n.RedisClient().Info(ctx, "replication").Result()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(info, "role:master") {
			t.Errorf("%s's redis is not a master:\n%s", n, info)
		}
	}
}

// TestActiveExpiryEveryDatabase: keys that expire and are never read again
// are deleted by the leader's active expiry, in every database: redis's
// memory does not fill with dead keys of a database other than 0.
func TestActiveExpiryEveryDatabase(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{})
	leader, _ := c.Leader(ctx)
	conn, err := dialRaw(leader.Addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dbs := []string{"0", "3", "9"}
	for _, db := range dbs {
		for _, args := range [][]string{
			{"SELECT", db},
			{"SET", "dead:1", "v", "PX", "200"},
			{"HSET", "dead:2", "f", "v"},
			{"PEXPIRE", "dead:2", "200"},
			{"SET", "alive", db},
			// Keeps the database one that may hold deadlines.
			{"SET", "later", db, "EX", "3600"},
		} {
			if v, err := conn.Do(args...); err != nil || v.IsError() {
				t.Fatalf("%q: %v %v", args, v, err)
			}
		}
	}
	err = waitFor(ctx, 20*time.Second, 250*time.Millisecond, "expired keys deleted in every database", func(ctx context.Context) error {
		dump := c.AssertRedisIdentical(ctx)
		var left []string
		for k := range dump {
			if strings.Contains(k, "/dead:") {
				left = append(left, k)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("still in redis: %v", left)
		}
		for _, db := range dbs {
			var n int
			fmt.Sscan(db, &n)
			if _, ok := dump[dumpKey(n, "alive")]; !ok {
				return fmt.Errorf("alive in db %s is gone", db)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
