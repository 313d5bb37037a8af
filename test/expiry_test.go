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
