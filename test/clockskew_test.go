package test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClockSkew: keys expire by the log's time, the leader's clock, never by
// a node's own. One follower's redis-server runs 30 s ahead, another's 30 s
// behind, and one follower's raftproxy 30 s ahead. Every node must answer
// alike and hold the same data:
//   - a key alive by the leader's clock, already past its deadline by the
//     fast redis's, is alive everywhere, and a write to it (APPEND) extends
//     it rather than making a new key (the reproduction);
//   - a key that expired by the leader's clock is gone everywhere, though
//     the slow redis's clock has not reached its deadline;
//   - TTLs are the same through every node, and a relative TTL set through
//     the skewed proxy counts from the leader's clock.
func TestClockSkew(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{SkewClocks: true})
	leader, followers := c.Leader(ctx)
	if leader == nil || len(followers) < 2 {
		t.Fatal("no stable leader")
	}
	fast, slow := followers[0], followers[1]
	if err := fast.SetRedisClock(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := slow.SetRedisClock(-30 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The follower's proxy runs ahead too (its redis is ahead already).
	if err := fast.KillProxy(); err != nil {
		t.Fatal(err)
	}
	fast.ProxyClock = 30 * time.Second
	if err := fast.StartProxy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitStable(ctx); err != nil {
		t.Fatal(err)
	}
	leader, _ = c.Leader(ctx)
	do := func(n *Node, want string, args ...string) {
		t.Helper()
		v, err := n.Do(ctx, 10*time.Second, args...)
		if err != nil {
			t.Fatalf("%s %q: %v", n, args, err)
		}
		if got := v.String(); want != "*" && got != want {
			t.Errorf("%s %q = %q, want %q", n, args, got, want)
		}
	}
	at := strconv.FormatInt(time.Now().Add(20*time.Second).Unix(), 10)
	do(leader, "+OK", "SET", "k7", "v7", "EXAT", at)
	do(leader, ":3", "APPEND", "k7", "x")
	do(leader, "+OK", "SET", "short", "v", "PX", "400")
	do(fast, "+OK", "SET", "rel", "v", "EX", "20")
	time.Sleep(700 * time.Millisecond)
	for _, n := range c.Nodes {
		do(n, `"v7x"`, "GET", "k7")
		do(n, ":1", "EXISTS", "k7")
		do(n, "$-1(nil)", "GET", "short")
		do(n, ":0", "EXISTS", "short")
		do(n, ":-2", "TTL", "short")
		for _, k := range []string{"k7", "rel"} {
			v, err := n.Do(ctx, 10*time.Second, "TTL", k)
			if err != nil {
				t.Fatal(err)
			}
			if ttl, _ := strconv.Atoi(strings.TrimPrefix(v.String(), ":")); ttl < 17 || ttl > 20 {
				t.Errorf("%s: TTL %s = %s, want about 19 (the leader's clock)", n, k, v.String())
			}
		}
		v, err := n.Do(ctx, 10*time.Second, "KEYS", "*")
		if err != nil {
			t.Fatal(err)
		}
		if s := v.String(); strings.Contains(s, "short") || !strings.Contains(s, "k7") {
			t.Errorf("%s: KEYS * = %s, want k7 and rel only", n, s)
		}
	}
	// Writes through each node to a key alive by the leader's clock.
	do(fast, ":5", "APPEND", "k7", "yz")
	do(slow, "+OK", "SET", "n", "1", "PX", "1500")
	for _, n := range c.Nodes {
		do(n, "*", "INCR", "n")
	}
	time.Sleep(1700 * time.Millisecond)
	do(fast, ":1", "INCR", "n") // expired by now: a new key
	dump := c.AssertRedisIdentical(ctx)
	if _, ok := dump[dumpKey(0, "short")]; ok {
		// The leader's active expiry deletes what expired, through the log.
		err := waitFor(ctx, 10*time.Second, 200*time.Millisecond, "short deleted by active expiry", func(ctx context.Context) error {
			d := c.AssertRedisIdentical(ctx)
			if v, ok := d[dumpKey(0, "short")]; ok {
				return fmt.Errorf("short is still in redis: %s", v)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	if v := dump[dumpKey(0, "k7")]; !strings.Contains(v, `"v7xyz"`) {
		t.Errorf("k7 in redis: %s, want v7xyz", v)
	}
}
